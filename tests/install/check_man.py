#!/usr/bin/env python3
"""Keeps the man pages (docs/man) from drifting from the programs' --help.

usage: check_man.py CRYPTEX CRYPTEXFS CRYPTEX_1 CRYPTEXFS_8 CRYPTEX_CONF_5 [VERSION]

cryptex(1): every subcommand `cryptex --help` lists has a ".SS cryptex SUB"
section and no other subcommand has one; in each section the options (\\-x,
\\-\\-name) are exactly those `cryptex SUB --help` prints, plus -h/--help
which every subcommand accepts.

cryptexfs(8): the .TP tags of OPTIONS are exactly the options in the option
table `cryptexfs --help` prints ("-o name" counted by name).

cryptex.conf(5): its SYNOPSIS names exactly the commands whose --help offers
--config, each with options that command has. (Its keys are checked
against the parser by policy/config_man_test.cc.)

Every page must render with `groff -man -ww` without a warning, its .TH
must name it (title and section from its file name), its references to
these pages must give their sections, and with VERSION (the project's) its
.TH line must say "cryptex VERSION".
Exits 1 naming every difference.
"""
import os
import re
import subprocess
import sys

# A dash option: not preceded by a word character or a dash ("read-only",
# "fs-verity" are not options), a letter first ("UTF-8" is not one).
DASH_OPT = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
# An "-o name" option of cryptexfs (name in lower case; "-o IMAGE" is not).
O_OPT = re.compile(r"(?<![\w-])-o\s+([a-z_]+)")
ALWAYS = {"-h", "--help"}


def usage_text(help_text):
    """Where --help names options: the usage paragraph (up to the first empty
    line) and the option table (lines starting with spaces and a dash); not
    the prose ("Unmounts ... (fusermount3 -u)" names no option of umount)."""
    keep, in_usage = [], False
    for line in help_text.splitlines():
        in_usage = line.startswith("usage:") or (in_usage and line.strip() != "")
        if in_usage or re.match(r"\s+-", line):
            keep.append(line)
    return "\n".join(keep)


def run_help(argv):
    r = subprocess.run(argv + ["--help"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(argv)} --help: exit status {r.returncode}: {r.stderr}")
    return r.stdout + r.stderr


def roff_text(line):
    """The text a roff line shows, roughly: macros, font escapes, quotes gone."""
    line = re.sub(r"^\.[A-Z]+\s*", "", line)
    line = re.sub(r"\\f[BIRP]", "", line)
    return line.replace("\\-", "-").replace("\\e", "\\").replace('"', "")


def cryptex_subcommands(help_text):
    section = help_text.split("commands:", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  ([a-z]+)\s", section, re.M)]


def man_sections(page, macro):
    """{heading: [lines]} for every `macro` heading (.SH or .SS)."""
    sections, current = {}, None
    for line in page.splitlines():
        if line.startswith(".SH ") or line.startswith(".SS "):
            current = line[4:].strip().strip('"') if line.startswith(macro + " ") else None
            if current is not None:
                sections[current] = []
        elif current is not None and not line.startswith('.\\"'):
            sections[current].append(line)
    return sections


def fs_opts(text):
    """Options in one cryptexfs option spec: "-o name" by name, dash options."""
    found = {"-o " + m.group(1) for m in O_OPT.finditer(text)}
    found |= set(DASH_OPT.findall(O_OPT.sub("", text)))
    return found


def compare(errors, where, from_help, from_man):
    for o in sorted(from_help - from_man):
        errors.append(f"{where}: {o} is in --help but not in the man page")
    for o in sorted(from_man - from_help):
        errors.append(f"{where}: {o} is in the man page but not in --help")


def check_cryptex(errors, cryptex, page_path):
    page = open(page_path, encoding="utf-8").read()
    subs = cryptex_subcommands(run_help([cryptex]))
    if len(subs) < 5:
        errors.append(f"{cryptex} --help: found only subcommands {subs}")
    sections = man_sections(page, ".SS")
    man_subs = [h.split()[1] for h in sections if h.startswith("cryptex ")]
    for s in sorted(set(subs) - set(man_subs)):
        errors.append(f"{page_path}: no '.SS cryptex {s}' section")
    for s in sorted(set(man_subs) - set(subs)):
        errors.append(f"{page_path}: section for 'cryptex {s}', which --help does not list")
    for s in subs:
        if s not in man_subs:
            continue
        from_help = set(DASH_OPT.findall(usage_text(run_help([cryptex, s])))) | ALWAYS
        text = " ".join(roff_text(l) for l in sections["cryptex " + s])
        compare(errors, f"{page_path} 'cryptex {s}'", from_help, set(DASH_OPT.findall(text)))


def check_cryptexfs(errors, cryptexfs, page_path):
    page = open(page_path, encoding="utf-8").read()
    from_help = set()
    for line in run_help([cryptexfs]).splitlines():
        if not re.match(r"\s+-", line):
            continue  # the option table's lines start with spaces and a dash
        for field in re.split(r"\s{2,}", line.strip()):
            if not field.startswith("-"):
                break
            from_help |= fs_opts(field)
    if len(from_help) < 10:
        errors.append(f"{cryptexfs} --help: found only options {sorted(from_help)}")
    lines = man_sections(page, ".SH").get("OPTIONS", [])
    from_man = set()
    for i, line in enumerate(lines[:-1]):
        if line.startswith(".TP"):
            from_man |= fs_opts(roff_text(lines[i + 1]))
    compare(errors, f"{page_path} OPTIONS", from_help, from_man)


def cryptex_commands(cryptex, subs):
    """{"agent": usage, "policy simulate": usage, ...}: each subcommand, or
    instead its subcommands when its usage names some ("cryptex feed show")."""
    commands = {}
    for s in subs:
        usage = usage_text(run_help([cryptex, s]))
        nested = sorted(set(re.findall(rf"cryptex {s} ([a-z]+)\b", usage)))
        if not nested:
            commands[s] = usage
        for n in nested:
            commands[f"{s} {n}"] = usage_text(run_help([cryptex, s, n]))
    return commands


def check_conf(errors, cryptex, page_path):
    page = open(page_path, encoding="utf-8").read()
    commands = cryptex_commands(cryptex, cryptex_subcommands(run_help([cryptex])))
    with_config = {c for c, usage in commands.items() if "--config" in DASH_OPT.findall(usage)}
    if not with_config:
        errors.append(f"{cryptex}: no command's --help offers --config")
    synopsis, groups = man_sections(page, ".SH").get("SYNOPSIS", []), [[]]
    for line in synopsis:
        if line.startswith(".br") or line.startswith(".PP"):
            groups.append([])
        else:
            groups[-1].append(roff_text(line))
    named = set()
    for group in groups:
        text = " ".join(group)
        m = re.match(r"\s*cryptex((?: [a-z]+)+)", text)
        if not m:
            continue
        command = m.group(1).strip()
        named.add(command)
        if command not in commands:
            errors.append(f"{page_path} SYNOPSIS: 'cryptex {command}' is not a command")
            continue
        for o in sorted(set(DASH_OPT.findall(text)) - set(DASH_OPT.findall(commands[command]))):
            errors.append(f"{page_path} SYNOPSIS: 'cryptex {command}' has no option {o}")
    for c in sorted(with_config - named):
        errors.append(f"{page_path} SYNOPSIS: 'cryptex {c}' takes --config but is not named")
    for c in sorted(named - with_config):
        errors.append(f"{page_path} SYNOPSIS: 'cryptex {c}' is named but takes no --config")


def page_id(page_path):
    """("cryptex.conf", "5") from .../cryptex.conf.5."""
    name, _, section = page_path.rsplit("/", 1)[-1].rpartition(".")
    return name, section


def check_th(errors, page_path):
    name, section = page_id(page_path)
    th = [l.split() for l in open(page_path, encoding="utf-8") if l.startswith(".TH ")]
    if len(th) != 1 or th[0][1:3] != [name.upper(), section]:
        errors.append(f"{page_path}: .TH {th} does not name {name.upper()} {section}")


def check_references(errors, page_paths):
    sections = dict(page_id(p) for p in page_paths)
    for p in page_paths:
        for n, line in enumerate(open(p, encoding="utf-8"), 1):
            for name, section in re.findall(r"^\.BR\s+(\S+)\s+\((\w+)\)", line):
                name = name.replace("\\-", "-")
                if name in sections and sections[name] != section:
                    errors.append(f"{p}:{n}: {name}({section}): the page is {name}({sections[name]})")


def check_renders(errors, page_path):
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", page_path],
                       capture_output=True, text=True)
    if r.returncode != 0 or r.stderr:
        errors.append(f"{page_path}: groff -man -ww: status {r.returncode}: {r.stderr.strip()}")


def check_version(errors, page_path, version):
    th = [l for l in open(page_path, encoding="utf-8") if l.startswith(".TH ")]
    if len(th) != 1 or f'"cryptex {version}"' not in th[0]:
        errors.append(f'{page_path}: .TH line {th} does not say "cryptex {version}"')


def main():
    if len(sys.argv) not in (6, 7):
        sys.exit(__doc__)
    cryptex, cryptexfs, man1, man8, man5 = sys.argv[1:6]
    pages = [man1, man8, man5]
    missing = [p for p in pages if not os.path.isfile(p)]
    if missing:
        sys.exit(f"no such man page: {' '.join(missing)}")
    errors = []
    for page in pages:
        check_th(errors, page)
        if len(sys.argv) == 7:
            check_version(errors, page, sys.argv[6])
        check_renders(errors, page)
    check_cryptex(errors, cryptex, man1)
    check_cryptexfs(errors, cryptexfs, man8)
    check_conf(errors, cryptex, man5)
    check_references(errors, pages)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        sys.exit(1)
    print("man pages match --help and render cleanly")


if __name__ == "__main__":
    main()
