#!/usr/bin/env python3
"""Checks the bash completion (completion/cryptex) in a real bash.

usage: completion_test.py CRYPTEX COMPLETION_FILE

Sources the completion (without bash-completion's helpers), puts CRYPTEX's
directory first in PATH and completes as a user would press TAB:
  cryptex ver<TAB>        -> verify
  cryptex <TAB>           -> every subcommand `cryptex --help` lists
  cryptex SUB -<TAB>      -> exactly the options `cryptex SUB --help` names
                             (check_man.py's rule), for every subcommand
  cryptex verify x --trust <TAB> -> directories only
  cryptex feed <TAB>      -> publish revoke show status
Exits 1 naming every difference.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_man  # noqa: E402  (the one rule for "the options --help names")


def complete(cryptex, completion, words, cwd):
    """COMPREPLY for the command line `words` (the last word is completed)."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    script = (f"source '{completion}' || exit 9\n"
              f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
              "_cryptex; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = dict(os.environ, PATH=os.path.dirname(cryptex) + ":" + os.environ.get("PATH", ""))
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                       text=True, env=env, cwd=cwd)
    if r.returncode != 0:
        sys.exit(f"bash completing {words}: status {r.returncode}: {r.stderr}")
    return sorted(w for w in r.stdout.split("\n") if w)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cryptex, completion = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    errors = []

    def expect(words, want, cwd="/"):
        got = complete(cryptex, completion, words, cwd)
        if got != sorted(want):
            errors.append(f"{' '.join(words)}<TAB>: got {got}, want {sorted(want)}")

    subs = check_man.cryptex_subcommands(check_man.run_help([cryptex]))
    expect(["cryptex", "ver"], ["verify"])
    expect(["cryptex", ""], subs)
    for sub in subs:
        options = set(check_man.DASH_OPT.findall(check_man.usage_text(check_man.run_help([cryptex, sub]))))
        expect(["cryptex", sub, "-"], options | {"--help"})
    expect(["cryptex", "build", "--re"], ["--release-counter"])
    expect(["cryptex", "feed", ""], ["publish", "revoke", "show", "status"])
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(os.path.join(d, "keys.d"))
        open(os.path.join(d, "keys.pub"), "w").close()
        expect(["cryptex", "verify", "x", "--trust", "ke"], ["keys.d"], cwd=d)
        expect(["cryptex", "verify", "x", "--pubkey", "ke"], ["keys.d", "keys.pub"], cwd=d)
        expect(["cryptex", "feed", "publish", "x", "--announce", "ke"], ["keys.d", "keys.pub"],
               cwd=d)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        sys.exit(1)
    print("completions match --help")


if __name__ == "__main__":
    main()
