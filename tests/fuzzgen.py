"""Hostile inputs for the fuzz tests: command lines built from the CLI's own parameter lists, hostile
values, hostile config files and environments.  Hypothesis strategies; nothing here runs anything."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Values a hostile agent, repository or user types.
HOSTILE = [
    "", " ", "-", "--", "-1", "-5", "0", "0.00001", "1e999", "1e3", "NaN", "nan", "inf", "-inf", "1_000", "0x10",
    "10000000000000000000000", "9" * 5000, "1" * 41, "1.", ".5", "1,5", "٣", "１２", "\x00", "a\x00b", "\udcff\udcfe",
    "\u202egnp.exe", "\x1b[31m", "../../etc/passwd", "/dev/null", "/", ".", "$(touch PWNED)", "`id`", "; rm -rf ~",
    "a" * 10_000, "claude\n", "claude ", "CLAUDE", "🙂", "pool:x", "world:rewards", "hold:x", "commit:x", "R" + "f" * 40,
    "2026-13-45T99:99:99Z", "0001-01-01T00:00:00Z", "{}", "[]", "null", '{"a":', "--json", "--help-me",
]
# Values that are valid somewhere, so commands get past parsing and exercise what is behind it.
PLAUSIBLE = ["claude", "builder", "zero", "coding", "planning", "claude-opus", "llama3.2", "10", "100", "450",
             "0.5", "main", "HEAD", "team", "fix: parser", "bd", "x", "nexushive-setup", "claude@aygp-dr.ai"]
VALUES = st.one_of(st.sampled_from(HOSTILE), st.sampled_from(PLAUSIBLE),
                   st.text(max_size=30), st.integers(-10**20, 10**20).map(str))

# Commands a fuzz run must not start: servers waiting on stdin, long simulations, pictures.
SKIP = {("mcp",), ("simulate",), ("dashboard",), ("plot",), ("sync",)}


def commands(app: Any) -> list[tuple[list[str], list[Any]]]:
    """(path, params) of every leaf command of a typer app."""
    import typer.main

    out: list[tuple[list[str], list[Any]]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        elif tuple(path[:1]) not in SKIP and tuple(path) not in SKIP:
            out.append((path, list(cmd.params)))

    walk(typer.main.get_command(app), [])
    return out


@st.composite
def command_line(draw: st.DrawFn, app: Any) -> list[str]:
    """One command line: a command, some of its options (hostile or plausible values) and arguments."""
    path, params = draw(st.sampled_from(commands(app)))
    args = list(path)
    for p in params:
        opts = [o for o in getattr(p, "opts", []) if o.startswith("-")]
        if opts:  # an option: sometimes present
            if not draw(st.booleans()):
                continue
            flag = draw(st.sampled_from(opts))
            if getattr(p, "is_flag", False):
                args.append(flag)
            else:
                args += [flag, draw(VALUES)]
        else:  # an argument: usually present
            if draw(st.integers(0, 9)) == 0:
                continue
            args.append(draw(VALUES))
    if draw(st.integers(0, 5)) == 0:
        args.append(draw(VALUES))  # one too many
    return args


def toml_value() -> st.SearchStrategy[str]:
    return st.sampled_from(['"x"', "1", "-1", "1e999", "nan", "true", "[]", "{}", '"\\u0000"', "10000000000000000000",
                            "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]", "0.000001", '""', "[1, \"a\"]",
                            "{ a = 1 }", '"(a|aa)+$"', '"a{1000}{1000}"'])


@st.composite
def hostile_config(draw: st.DrawFn, base: str) -> str:
    """The default config with a few keys set to hostile values, tables added, or the text cut short."""
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 4))
        keyed = [i for i, ln in enumerate(lines) if " = " in ln and not ln.lstrip().startswith("#")]
        if kind <= 1 and keyed:
            i = draw(st.sampled_from(keyed))
            lines[i] = lines[i].split(" = ", 1)[0] + " = " + draw(toml_value())
        elif kind == 2:
            lines.append(draw(st.sampled_from(["[oops]", "[agents.\"bad name\"]", "[[contracts]]", "x = 1",
                                               "[agents.claude.limits]\nhourly = -1", "[exchange]\nbackend = 'x'",
                                               "nested = " + "[" * 400 + "]" * 400])))
        elif kind == 3:
            lines = lines[: draw(st.integers(0, len(lines)))]
        else:
            lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=40)))
    return "\n".join(lines) + "\n"
