#!/usr/bin/env python3
"""Module graph of the gatehouse crate: no import cycles allowed.

Reads every file under src/, extracts the `crate::...` paths it names (in
`use` items, nested `use` groups and inline paths), and builds two graphs:

* between top-level modules (`auth`, `store`, `http`, ...), and
* between sibling submodules inside each module (`store/redb_store` ->
  `store/backup`, ...), where `super::x` counts as a sibling edge too.

Edges from a module to itself, and from a parent's own file (mod.rs) to its
children, are not cycles worth reporting: a parent re-exporting or calling
its children is the normal direction. A child naming the parent's own items
(`super::Thing` defined in mod.rs) is an edge child -> parent, so
parent -> child -> parent *is* reported.

Prints both graphs and exits 1 when any group of modules imports each other
in a circle (a strongly connected component), listing every edge inside the
group with the file and path that creates it. No dependencies: python3 only.
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Roots that are the crate itself, not modules (binary entry, crate root).
ROOTS = {"lib", "main"}


def module_path(rel):
    """src-relative file path -> module path list (['store', 'redb_store'])."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = []
    for line in text.splitlines():
        # Drop // comments (good enough: crate paths do not appear in strings).
        i = line.find("//")
        if i >= 0:
            line = line[:i]
        lines.append(line)
    return "\n".join(lines)


def strip_tests(text):
    """Drop `#[cfg(test)] mod x { ... }` blocks: test code may import freely."""
    out = []
    i = 0
    pat = re.compile(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{")
    while True:
        m = pat.search(text, i)
        if not m:
            out.append(text[i:])
            break
        out.append(text[i:m.start()])
        depth = 1
        j = m.end()
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        i = j
    return "".join(out)


def expand_use_groups(text):
    """Yield full paths from `use a::{b, c::{d, e}}` trees and inline paths."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand_tree(m.group(1).strip()))
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text):
        paths.append(m.group(1))
    return paths


def expand_tree(tree):
    tree = re.sub(r"\s+as\s+\w+", "", tree)  # `use a::B as C;` names a::B
    tree = re.sub(r"\s+", "", tree)
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix = tree[:i]
    inner = tree[i + 1:tree.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        cur += ch
    if cur:
        items.append(cur)
    out = []
    for item in items:
        for sub in expand_tree(item):
            out.append(prefix + sub if sub != "self" else prefix.rstrip(":"))
    return out


def resolve(path, mod, is_mod_file):
    """A path as named in module `mod` -> absolute module path list."""
    segs = path.split("::")
    if segs[0] == "crate":
        return segs[1:]
    # `self::` in a file names its own children; in mod.rs `super` is the
    # parent of the directory module.
    base = list(mod)
    if segs[0] == "self":
        return base + segs[1:]
    while segs and segs[0] == "super":
        base = base[:-1]
        segs = segs[1:]
    return base + segs


def main():
    files = {}
    for dirpath, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, SRC)
                files[rel] = full
    modules = {}
    for rel in files:
        modules[tuple(module_path(rel))] = rel
    known = set(modules)

    def longest_known(segs):
        for n in range(len(segs), 0, -1):
            if tuple(segs[:n]) in known:
                return tuple(segs[:n])
        return None

    why = {}  # (where, a, b) -> [(file, path)], printed for edges in cycles
    top = {}  # top-level module -> set of top-level modules
    sib = {}  # parent tuple -> {child -> set(child)}
    for rel, full in sorted(files.items()):
        mod = tuple(module_path(rel))
        if not mod or mod[0] in ROOTS:
            continue
        is_mod_file = os.path.basename(rel) == "mod.rs"
        text = strip_tests(strip_comments(open(full, encoding="utf-8").read()))
        for path in expand_use_groups(text):
            target = resolve(path, mod, is_mod_file)
            if not target:
                continue
            tgt = longest_known(target)
            if tgt is None:
                continue
            if tgt[0] != mod[0]:
                top.setdefault(mod[0], set()).add(tgt[0])
                why.setdefault(("crate", mod[0], tgt[0]), []).append((rel, path))
                continue
            # Same top-level module: find the common parent and the two
            # sibling children under it.
            k = 0
            while k < min(len(mod), len(tgt)) and mod[k] == tgt[k]:
                k += 1
            parent = mod[:k]
            a = mod[k] if k < len(mod) else "(mod)"
            b = tgt[k] if k < len(tgt) else "(mod)"
            if a == b or a == "(mod)":
                # Self, or a parent's own file naming its children: fine.
                continue
            sib.setdefault(parent, {}).setdefault(a, set()).add(b)
            why.setdefault(("::".join(parent), a, b), []).append((rel, path))
    for m in known:
        if len(m) == 1 and m[0] not in ROOTS:
            top.setdefault(m[0], set())

    cycles = []
    print("== top-level module graph")
    for a in sorted(top):
        print(f"  {a} -> {', '.join(sorted(top[a])) or '(nothing)'}")
    cycles += [("crate", c) for c in find_cycles(top)]
    for parent in sorted(sib):
        name = "::".join(parent)
        print(f"== inside {name}")
        g = sib[parent]
        for a in sorted(g):
            print(f"  {a} -> {', '.join(sorted(g[a]))}")
        cycles += [(name, c) for c in find_cycles(g)]
    if cycles:
        print(f"\n{len(cycles)} import cycle(s) (strongly connected groups):")
        for where, members in cycles:
            print(f"  in {where}: {', '.join(members)}")
            for a in members:
                for b in members:
                    seen = sorted(set(why.get((where, a, b), [])))
                    for f, p in seen[:6]:
                        print(f"      {a} -> {b}: {f}: {p}")
                    if len(seen) > 6:
                        print(f"      {a} -> {b}: ... and {len(seen) - 6} more")
        return 1
    print("\nno import cycles")
    return 0


def find_cycles(graph):
    """One representative cycle per non-trivial strongly connected component."""
    index, low, on, stack, comps = {}, {}, set(), [], []
    counter = [0]
    nodes = set(graph) | {b for bs in graph.values() for b in bs}
    sys.setrecursionlimit(10000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    for v in sorted(nodes):
        if v not in index:
            strong(v)
    # Each component as a sorted member list; main() prints its edges.
    return [sorted(c) for c in comps]


if __name__ == "__main__":
    sys.exit(main())
