#!/usr/bin/env python3
"""Generates include/forklift.h from the Swift sources and the public C types.

Inputs:
  - the header swiftc emits for the @_cdecl exports (-emit-clang-header-path): the exact C
    signature of every exported function, with the C typedef names the Swift code uses;
  - Sources/CForklift/include/forklift_types.h: the public types between the PUBLIC markers;
  - Sources/Forklift/CAPI/*.swift: the `///` doc comment above each @_cdecl.

The result is plain C99/C++ with no compiler-specific annotations. The script fails if a
signature uses a type C does not know (NSInteger: use size_t/ptrdiff_t in the Swift export),
or if an export has no doc comment.

usage: gen-header.py RAW_HEADER OUTPUT
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TYPES = ROOT / "Sources/CForklift/include/forklift_types.h"
CAPI = ROOT / "Sources/Forklift/CAPI"
# Sections of the header, in order: the export file and its heading.
SECTIONS = [
    ("RuntimeExports.swift", "Versions, errors, system"),
    ("PoolExports.swift", "Pools"),
    ("SubmitExports.swift", "Submitting work: apply, map, starmap, strided map"),
    ("GroupExports.swift", "Task groups: submit many, wait for all"),
    ("TypedExports.swift", "Typed calls: any C function by signature, through libffi"),
    ("ResultExports.swift", "Results (AsyncResult)"),
    ("IteratorExports.swift", "Iterators (imap, imap_unordered)"),
    ("TaskExports.swift", "Inside a task"),
    ("ProcessExports.swift", "Processes: a function in its own OS process (multiprocessing.Process)"),
    ("SharedMemoryExports.swift", "Queues and shared memory between processes"),
    ("PipeExports.swift", "Pipes: two-way message channels between processes"),
    ("SyncExports.swift", "Locks, events and semaphores between processes"),
    ("RemoteExports.swift", "Remote tasks, objects and actors (Ray): remote, put, get, wait, actors"),
    ("RemoteTypedExports.swift", "Typed remote tasks: any C function by signature, as a remote task"),
]


def fail(message):
    sys.exit(f"gen-header: {message}")


def raw_prototypes(raw_path):
    text = pathlib.Path(raw_path).read_text()
    prototypes = {}
    for match in re.finditer(r"SWIFT_EXTERN\s+(.*?);", text, re.S):
        decl = " ".join(match.group(1).split())
        decl = re.sub(r"\bSWIFT_[A-Z_]+(\([^)]*\))?", "", decl)
        decl = re.sub(r"\s*_Nullable|\s*_Nonnull|\s*_Null_unspecified", "", decl).strip()
        name = re.search(r"\b(fl_[a-z0-9_]+)\s*\(", decl)
        if not name:
            continue
        if re.search(r"\bNS(U)?Integer\b|\bBOOL\b|\bSWIFT_", decl):
            fail(f"{name.group(1)} uses a type with no plain C spelling: {decl}")
        prototypes[name.group(1)] = decl
    return prototypes


def format_prototype(decl):
    head, params = decl.split("(", 1)
    params = params.rsplit(")", 1)[0]
    names = [p.strip() for p in params.split(",")] if params.strip() else ["void"]
    # Swift parameter names that are C-safe but were suffixed for Swift keywords (in_ -> in).
    names = [re.sub(r"\b([a-z]+)_$", r"\1", p) for p in names]
    head = head.strip().replace("char const *", "const char *").replace("void const *", "const void *")
    names = [p.replace("char const *", "const char *").replace("void const *", "const void *") for p in names]
    names = [re.sub(r"(\w+) const \*", r"const \1 *", p) for p in names]
    names = [re.sub(r"\*\s+\*", "**", p) for p in names]
    names = [re.sub(r"\s*(\*+)\s*(\w+)$", r" \1\2", p) for p in names]
    head = re.sub(r"\s*(\*+)\s*(\w+)$", r" \1\2", head)
    line = f"{head}({', '.join(names)});"
    if len(line) <= 100:
        return line
    indent = " " * (len(head) + 1)
    out, current = [], f"{head}("
    for i, p in enumerate(names):
        piece = p + ("," if i < len(names) - 1 else ");")
        if len(current) + len(piece) + 1 > 100 and current.strip() not in ("", f"{head}("):
            out.append(current.rstrip())
            current = indent
        current += piece + " "
    out.append(current.rstrip())
    return "\n".join(out)


def doc_comments(path):
    lines = path.read_text().splitlines()
    docs = []
    for i, line in enumerate(lines):
        match = re.match(r'\s*@_cdecl\("(fl_[a-z0-9_]+)"\)', line)
        if not match:
            continue
        j = i - 1
        block = []
        while j >= 0 and lines[j].strip().startswith("///"):
            block.insert(0, lines[j].strip()[3:].rstrip())
            j -= 1
        if not block:
            fail(f"{match.group(1)} in {path.name} has no /// doc comment")
        docs.append((match.group(1), block))
    return docs


def public_types():
    text = TYPES.read_text()
    begin = text.index("/* FORKLIFT-PUBLIC-BEGIN */") + len("/* FORKLIFT-PUBLIC-BEGIN */")
    end = text.index("/* FORKLIFT-PUBLIC-END */")
    return text[begin:end].strip("\n")


def main():
    if len(sys.argv) != 3:
        fail("usage: gen-header.py RAW_HEADER OUTPUT")
    prototypes = raw_prototypes(sys.argv[1])
    out = [
        "/*",
        " * forklift.h: the C API of Forklift, an embeddable parallel-execution library.",
        " *",
        " * Generated by `make header` from the Swift sources (Sources/Forklift/CAPI) and the public",
        " * C types (Sources/CForklift/include/forklift_types.h). Do not edit by hand.",
        " *",
        " * Conventions: every fallible call returns FL_OK (0) or a negative FL_E* code; fl_strerror()",
        " * names a code and fl_last_error() gives the calling thread's last failure in detail. A NULL,",
        " * destroyed or foreign handle yields FL_EHANDLE, never a crash. Each function documents what",
        " * it copies, what it borrows and until when, and which thread runs its callbacks.",
        " *",
        " * fork() by the program: a child forked while Forklift threads run in the parent (a pool, a",
        " * runtime, a process started as a daemon) is limited to the calls a started process has:",
        " * fl_task_*, queues, pipes, locks, events, semaphores and shared memory. Every other call",
        " * returns FL_ENOTSUP there: the parent's threads do not exist in the child, and locks they",
        " * held stay held. Exec, or start processes with fl_process_start, instead. A child forked",
        " * when no Forklift thread runs is free: before the first pool or runtime, or after the last",
        " * is destroyed, unless a process was started as a daemon or with FL_START_FORKSERVER (the",
        " * thread that forks those stays for the rest of the program).",
        " */",
        "#ifndef FORKLIFT_H",
        "#define FORKLIFT_H",
        "",
        public_types(),
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
    ]
    documented = set()
    for file_name, heading in SECTIONS:
        out += ["", "/* " + "-" * 88 + " */", f"/* {heading:<88} */", "/* " + "-" * 88 + " */"]
        for name, block in doc_comments(CAPI / file_name):
            if name not in prototypes:
                fail(f"{name} is exported in {file_name} but missing from the emitted header")
            documented.add(name)
            out.append("")
            out.append("/**")
            out += [(" *" + line) if line.strip() else " *" for line in block]
            out.append(" */")
            out.append(format_prototype(prototypes[name]))
    missing = set(prototypes) - documented
    if missing:
        fail(f"exports not in any CAPI section file: {sorted(missing)}")
    out += ["", "#ifdef __cplusplus", "}", "#endif", "", "#endif /* FORKLIFT_H */", ""]
    pathlib.Path(sys.argv[2]).write_text("\n".join(out))


if __name__ == "__main__":
    main()
