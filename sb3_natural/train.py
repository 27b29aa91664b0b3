"""``python -m sb3_natural.train``: rl-zoo3's ``train`` with sb3_natural's algorithms registered.

Every rl-zoo3 flag works. Our keys (nac, fisher_trpo, reinforce) read ``zoo_configs/<key>.yml``
unless ``--conf-file`` is given; SB3's keys (ppo, a2c, trpo, ...) use rl-zoo3's own files.

    python -m sb3_natural.train --algo nac --env CartPole-v1 -n 100000 --seed 0 -f logs
"""

from sb3_natural.zoo import run_zoo


def main() -> None:
    run_zoo("train")


if __name__ == "__main__":
    main()
