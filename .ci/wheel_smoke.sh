#!/usr/bin/env bash
# Wheel smoke test: build the wheel (and check the sdist's contents), install it (not editable) with the zoo extra into a fresh venv,
# and from a directory outside the checkout run every entry point. Fails if any of them fails.
# Usage: bash .ci/wheel_smoke.sh [PYTHON]   (PYTHON builds the wheel; default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build_python=${1:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$build_python" -m build --wheel --outdir "$work/dist" . > "$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/sb3_natural-*.whl)
echo "built $(basename "$wheel")"
# The sdist carries every tracked source, test (with its data), example, config and docs file (not the
# benchmark results): MANIFEST.in once left out tests/data/ and benchmarks/configs/.
"$build_python" -m build --sdist --outdir "$work/dist" . >> "$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
"$build_python" - "$work"/dist/sb3_natural-*.tar.gz <<'EOF_SDIST'
import subprocess, sys, tarfile
names = {n.split("/", 1)[1] for n in tarfile.open(sys.argv[1]).getnames() if "/" in n}
folders = ["sb3_natural", "tests", "examples", "zoo_configs", "benchmarks", "docs"]
tracked = subprocess.run(["git", "ls-files", *folders], capture_output=True, text=True, check=True).stdout.split()
missing = [p for p in tracked if not p.startswith("benchmarks/results/") and p not in names]
if missing:
    sys.exit("FAILED: the sdist lacks tracked files:\n  " + "\n  ".join(missing))
print(f"built {sys.argv[1].rsplit('/', 1)[1]}: it carries the {len(tracked)} tracked files checked")
EOF_SDIST
python3 -m venv "$work/venv"
# venv_install VENV ARGS...: pip install into that venv with the repository's constraints
venv_install() { local venv=$1; shift; "$venv/bin/python" -m pip install -q -c "$root/constraints.txt" "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
venv_install "$work/venv" "torch==2.13.0"
venv_install "$work/venv" "${wheel}[zoo]"
"$work/venv/bin/python" -c "import sb3_natural" || { echo "the wheel did not install"; exit 1; }

mkdir "$work/elsewhere"
cd "$work/elsewhere"
export PATH="$work/venv/bin:$PATH"
run() { echo "+ $*"; "$@" > "$work/last.log" 2>&1 || { tail -40 "$work/last.log"; echo "FAILED: $*"; exit 1; }; }
# Every zoo key, train 2k steps then enjoy, on an env its config has.
for pair in nac:CartPole-v1 fisher_trpo:CartPole-v1 reinforce:CartPole-v1 acktr:CartPole-v1 td3_ig:Pendulum-v1 td3_ig_tanh:Pendulum-v1 ddpg_ig:Pendulum-v1; do
    algo=${pair%%:*}
    env_id=${pair#*:}
    run sb3-natural-train --algo "$algo" --env "$env_id" -n 2000 -f logs --seed 0 --eval-freq -1
    run sb3-natural-enjoy --algo "$algo" --env "$env_id" -f logs -n 300 --no-render
done
run python -m sb3_natural.demo --help
run python -m sb3_natural.demo --timesteps 2048 --out demo_out
test -s demo_out/nac_cartpole_learning_curve.png || { echo "FAILED: the demo wrote no PNG"; exit 1; }
run python -m sb3_natural.benchmark --help
run python -c "from sb3_natural.configs import zoo_config_dir; d = zoo_config_dir(); assert 'site-packages' in str(d), d; print(d)"
cat "$work/last.log"

# The wheel alone, without extras: every algorithm trains, saves and loads; the zoo and benchmark
# entry points exit naming the zoo extra's pip command instead of a ModuleNotFoundError traceback.
python3 -m venv "$work/bare"
venv_install "$work/bare" "torch==2.13.0"
venv_install "$work/bare" "$wheel"
mkdir "$work/bare_cwd"
cd "$work/bare_cwd"
run "$work/bare/bin/python" -c "
from sb3_natural import ACKTR, DDPG, NAC, REINFORCE, TD3, FisherTRPO
cases = [(NAC, 'CartPole-v1', {'n_steps': 16}), (FisherTRPO, 'CartPole-v1', {'n_steps': 32, 'batch_size': 32}),
         (REINFORCE, 'CartPole-v1', {}), (ACKTR, 'Pendulum-v1', {'n_steps': 16}),
         (TD3, 'Pendulum-v1', {'learning_starts': 10}), (DDPG, 'Pendulum-v1', {'learning_starts': 10})]
for cls, env_id, kwargs in cases:
    model = cls('MlpPolicy', env_id, seed=0, **kwargs).learn(64)
    model.save('model')
    cls.load('model')
print('the algorithms work without extras')
"
for cmd in "$work/bare/bin/sb3-natural-train --algo nac --env CartPole-v1" "$work/bare/bin/python -m sb3_natural.benchmark --suite quick"; do
    echo "+ $cmd (no zoo extra)"
    if $cmd > "$work/last.log" 2>&1; then echo "FAILED: $cmd ran without the zoo extra"; exit 1; fi
    grep -q 'pip install "sb3-natural\[zoo\]"' "$work/last.log" || { tail -20 "$work/last.log"; echo "FAILED: $cmd did not name the zoo extra"; exit 1; }
    if grep -q Traceback "$work/last.log"; then tail -20 "$work/last.log"; echo "FAILED: $cmd printed a traceback"; exit 1; fi
done
echo "wheel smoke test passed"
