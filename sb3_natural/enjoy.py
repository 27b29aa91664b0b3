"""``python -m sb3_natural.enjoy``: rl-zoo3's ``enjoy`` with sb3_natural's algorithms registered.

python -m sb3_natural.enjoy --algo nac --env CartPole-v1 -f logs -n 1000 --no-render
"""

from sb3_natural.zoo import run_zoo


def main() -> None:
    run_zoo("enjoy")


if __name__ == "__main__":
    main()
