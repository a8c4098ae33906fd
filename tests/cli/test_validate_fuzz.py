"""Fuzz `landscape validate` with random and malformed configs: only clean answers, never a traceback.

A seeded generator mutates the built-in `smoke` config (wrong types, unknown keys, deleted keys, empty
lists, negative, huge and non-finite numbers, strings for numbers, nested garbage) and also feeds invalid
YAML, binary junk, YAML bombs and random `--set` overrides. Every answer must be one of:
  * exit 0 and an "ok: ..." line (the mutation happened to be valid), or
  * exit 2 and exactly one line "error: ..." on stderr,
within a time limit (a config must not make validation hang or eat memory). The seed makes a failure
reproducible: the failing case is printed with its seed and mutation.

Most cases run in-process through click's CliRunner (fast); a few go through the real console script.
"""

from __future__ import annotations

import copy
import os
import random
import subprocess
import time

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.config import read_raw
from tests.helpers import hygienic_env, landscape_cmd

BASE, _ = read_raw("smoke")
SEED = int(os.environ.get("LANDSCAPE_FUZZ_SEED", "20240611"))
CASES = int(os.environ.get("LANDSCAPE_FUZZ_CASES", "400"))
SLOW_CASE_S = 10.0  # one validation takes ~10-50 ms; seconds mean it builds or expands what it should not

GARBAGE = [
    None, True, False, 0, -1, 1, 2**31, 2**63, 10**30, -(10**30), 1e308, -1e308, 1e-308, 0.5, -0.5,
    float("nan"), float("inf"), float("-inf"), "", " ", "abc", "1e3", "-5", "nan", "inf", "0x10", "1_000",
    "null", "~", "[1, 2]", "{a: 1}", "\x00", "é", "😀" * 3, [], [None], [[]], [1, "a"], [[1, 2], [3]],
    {}, {"a": {"b": {"c": None}}}, {1: 2}, {"": ""}, {None: 1}, [{"x": [1, {"y": "z"}]}], "x" * 5000,
    list(range(50)),
]


def _paths(node, prefix=()):
    """Every (path, value) in a nested dict/list config."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _set(root, path, value):
    node = root
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _delete(root, path):
    node = root
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]


def mutate(rng: random.Random, raw: dict) -> tuple[dict, str]:
    """One to three random mutations of ``raw``; returns (config, description)."""
    raw = copy.deepcopy(raw)
    done = []
    for _ in range(rng.randint(1, 3)):
        paths = [p for p, _ in _paths(raw) if p]
        op = rng.choice(["replace", "replace", "delete", "unknown", "empty", "numeric", "wrap"])
        if not paths and op != "unknown":
            op = "unknown"
        path = rng.choice(paths) if paths else ()
        if op == "replace":
            value = rng.choice(GARBAGE)
            _set(raw, path, copy.deepcopy(value))
            done.append(f"{path}={value!r:.40}")
        elif op == "delete":
            _delete(raw, path)
            done.append(f"del {path}")
        elif op == "unknown":
            sections = [p for p, v in _paths(raw) if isinstance(v, dict)]
            where = rng.choice(sections)
            key = rng.choice(["epochs", "epoch", "lr", "seed", "values", "foo", "Workload", "trainng", 7, ""])
            node = raw
            for p in where:
                node = node[p]
            node[key] = rng.choice(GARBAGE)
            done.append(f"add {where}+{key!r}")
        elif op == "empty":
            _set(raw, path, rng.choice([[], {}, "", None]))
            done.append(f"empty {path}")
        elif op == "numeric":
            value = rng.choice([-1, 0, -0.0, 1e-12, 1e12, 10**18, -(10**18), 2**64, 3.7, -3.7, "12", "1e9"])
            _set(raw, path, value)
            done.append(f"{path}={value!r}")
        elif op == "wrap":
            old = rng.choice([p for p, _ in _paths(raw)] or [()])
            if old:
                node = raw
                for p in old[:-1]:
                    node = node[p]
                node[old[-1]] = rng.choice([[node[old[-1]]], {"x": node[old[-1]]}])
                done.append(f"wrap {old}")
    return raw, "; ".join(done)


def random_override(rng: random.Random) -> str:
    keys = [".".join(map(str, p)) for p, _ in _paths(BASE) if p and all(isinstance(x, str) for x in p)]
    key = rng.choice(keys + ["training.epoch", "nope", "load..values", ".x", "seeds.0", "metrics.curve.pts", ""])
    value = rng.choice(["", "[", "]", "{a: [}", "1e999", "-1", "[8, x]", "!!python/object:os.system ls", "null",
                        "'unterminated", "{}", "[]", "0", "1e-3", "🙂", "a: b: c", "- - -", "*alias", "&a [1]"])
    return f"{key}={value}" if rng.random() < 0.9 else key + value  # sometimes no '='


def junk_files(rng: random.Random) -> list[tuple[str, bytes]]:
    """Invalid YAML and binary junk, deterministic for the seed."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    return [
        ("binary", bytes(rng.randrange(256) for _ in range(2000))),
        ("nul", b"\x00" * 100),
        ("latin1", "name: caf\xe9\n".encode("latin-1")),
        ("utf16", "name: x\n".encode("utf-16")),
        ("unclosed", b"name: [smoke\nload: {name: width"),
        ("tabs", b"name:\tsmoke\n\tload: 1"),
        ("list", b"- 1\n- 2\n"),
        ("scalar", b"42"),
        ("empty", b""),
        ("python tag", b"name: !!python/object/apply:os.system ['true']"),
        ("billion laughs", bomb.encode()),
        ("deep", ("x: " + "[" * 5000 + "]" * 5000).encode()),
        ("dupe keys", yaml.safe_dump(BASE).encode() + b"\nname: again\n"),
        ("huge", b"name: smoke\n" + b"#" * 2_000_000 + b"\n"),
    ]


def check_clean(result, what: str) -> None:
    """exit 0 with "ok:" (and only "warning: ..." lines on stderr), or exit 2 with exactly one "error: ..."
    line; never a traceback."""
    out = result.stdout
    err = result.stderr
    exc = getattr(result, "exception", None)
    context = f"{what}\nexit {result.exit_code if hasattr(result, 'exit_code') else result.returncode}\n" \
              f"stdout: {out[-600:]}\nstderr: {err[-1500:]}"
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    if exc is not None and not isinstance(exc, SystemExit):
        import traceback

        raise AssertionError(context + "\n" + "".join(traceback.format_exception(exc))[-3000:])
    assert "Traceback" not in out + err, context
    assert code in (0, 2), context
    if code == 0:
        assert out.startswith("ok: "), context
        assert all(line.startswith("warning: ") for line in err.strip().splitlines()), context
    else:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), context
        assert len(lines[0]) < 2000, context  # one readable line, not a dump of the config


def run_validate(runner: CliRunner, args: list[str], what: str):
    started = time.monotonic()
    result = runner.invoke(main, ["validate", *args], catch_exceptions=True)
    took = time.monotonic() - started
    check_clean(result, what)
    assert took < SLOW_CASE_S, f"{what}: validation took {took:.1f} s"
    return result


@pytest.fixture(scope="module")
def runner():
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()  # click >= 8.2 keeps stderr apart by default
    # Import torch and the workloads once before any case is timed.
    assert runner.invoke(main, ["validate", "smoke"]).exit_code == 0
    return runner


def test_random_mutations_of_a_valid_config(runner, tmp_path):
    rng = random.Random(SEED)
    outcomes = {0: 0, 2: 0}
    for i in range(CASES):
        raw, desc = mutate(rng, BASE)
        path = tmp_path / f"case{i}.yaml"
        try:
            path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        except yaml.YAMLError:
            continue  # not representable as YAML (cannot come from a file)
        result = run_validate(runner, [str(path)], f"seed {SEED} case {i}: {desc}")
        outcomes[result.exit_code] += 1
    # The generator must mostly produce broken configs, and the test must see both answers.
    assert outcomes[2] > CASES // 2, outcomes
    assert outcomes[0] >= 1, outcomes


def test_random_overrides(runner):
    rng = random.Random(SEED + 1)
    for i in range(CASES // 2):
        sets = [random_override(rng) for _ in range(rng.randint(1, 3))]
        args = ["smoke"]
        for s in sets:
            args += ["--set", s]
        run_validate(runner, args, f"seed {SEED + 1} case {i}: --set {sets}")


def test_invalid_yaml_and_binary_junk(runner, tmp_path):
    rng = random.Random(SEED + 2)
    for name, data in junk_files(rng):
        path = tmp_path / "junk.yaml"
        path.write_bytes(data)
        result = run_validate(runner, [str(path)], f"junk file {name!r}")
        if name not in ("empty", "dupe keys"):
            assert result.exit_code == 2, name
    # Not a file at all: a folder, an unreadable file.
    run_validate(runner, [str(tmp_path)], "a folder")
    locked = tmp_path / "locked.yaml"
    locked.write_text("name: x\n")
    locked.chmod(0)
    run_validate(runner, [str(locked)], "an unreadable file")


@pytest.mark.parametrize("override, fragment", [
    # Each of these once gave a traceback, a hang or an "ok" for a sweep that could only crash later.
    ("workload.model_args={depth: 1000000000}", "workload.model_args.depth"),  # hung building 10^9 layers
    ("load.values=[1000000000000]", "a width must be an integer in [1, 1000000]"),  # torch size overflow before
    ("load.values=[1.0e300]", "a width must be an integer in [1, 1000000]"),  # a C++ stack trace before
    ("load.values=[1000000]", "parameters"),  # 10^12 parameters: "ok" before
    ("seeds=[0, 1180591620717411303424]", "seeds must lie in"),  # torch.manual_seed overflow in every job
    ("metrics.curve.seed=-1", "metrics.curve.seed"),
    ("load.values=" + "[" * 3000 + "]" * 3000, "not valid YAML"),  # RecursionError inside PyYAML
])
def test_known_nasty_inputs_get_a_named_error(runner, override, fragment):
    result = run_validate(runner, ["smoke", "--set", override], override[:60])
    assert result.exit_code == 2 and fragment in result.stderr, result.stderr


def test_through_the_real_console_script(tmp_path):
    """The same guarantees hold in a real process (click's runner shares this interpreter's state)."""
    env = hygienic_env()
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(bytes(range(256)) * 4)
    rng = random.Random(SEED + 3)
    raw, desc = mutate(rng, BASE)
    mutated = tmp_path / "mutated.yaml"
    mutated.write_text(yaml.safe_dump(raw))
    for args, what in (([str(junk)], "binary junk"), ([str(mutated)], desc),
                       (["smoke", "--set", "load.values=[8, -3]"], "negative width")):
        proc = subprocess.run(landscape_cmd() + ["validate", *args], capture_output=True, text=True, env=env,
                              timeout=120)
        check_clean(proc, what)
