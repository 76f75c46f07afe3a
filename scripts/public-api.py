#!/usr/bin/env python3
"""The public API of a crate, one item per line, from its rustdoc JSON.

Usage: scripts/public-api.py target/doc/picloud_host.json > host/public-api.txt

scripts/check-public-api.sh builds the JSON (rustdoc's JSON output, unstable,
enabled on the pinned stable toolchain with RUSTC_BOOTSTRAP=1) and compares
this listing with the committed host/public-api.txt, so that every change to
the library's public surface shows up in review as a change to that file.

Listed: modules, re-exports, structs (public fields), enums (variants),
traits (methods), functions, constants, statics, type aliases, the public
inherent methods of each type with their signatures, and the traits each type
implements (auto traits and blanket impls left out). Signatures are rendered
compactly; generics and where clauses are shown as rustdoc records them.
"""

import json
import sys


def main(path):
    doc = json.load(open(path))
    index = doc["index"]
    lines = set()

    def item(i):
        return index.get(str(i))

    def ty(t):
        if t is None:
            return "()"
        (kind, v), = t.items()
        if kind == "resolved_path":
            return v["path"] + args(v.get("args"))
        if kind == "generic":
            return v
        if kind == "primitive":
            return v
        if kind == "borrowed_ref":
            life = (v["lifetime"] + " ") if v.get("lifetime") else ""
            return "&" + life + ("mut " if v["is_mutable"] else "") + ty(v["type"])
        if kind == "slice":
            return "[" + ty(v) + "]"
        if kind == "array":
            return "[" + ty(v["type"]) + "; " + v["len"] + "]"
        if kind == "tuple":
            return "(" + ", ".join(ty(x) for x in v) + ")"
        if kind == "raw_pointer":
            return ("*mut " if v["is_mutable"] else "*const ") + ty(v["type"])
        if kind == "impl_trait":
            return "impl " + " + ".join(bound(b) for b in v)
        if kind == "dyn_trait":
            parts = [poly(p) for p in v["traits"]]
            if v.get("lifetime"):
                parts.append(v["lifetime"])
            return "dyn " + " + ".join(parts)
        if kind == "qualified_path":
            return "<" + ty(v["self_type"]) + ">::" + v["name"]
        if kind == "function_pointer":
            return "fn(" + ", ".join(ty(x[1]) for x in v["sig"]["inputs"]) + ") -> " + ty(v["sig"]["output"])
        if kind == "infer":
            return "_"
        return kind

    def args(a):
        if not a:
            return ""
        if "angle_bracketed" in a:
            ab = a["angle_bracketed"]
            parts = []
            for x in ab["args"]:
                if "type" in x:
                    parts.append(ty(x["type"]))
                elif "lifetime" in x:
                    parts.append(x["lifetime"])
                elif "const" in x:
                    parts.append(str(x["const"].get("expr", "_")))
                else:
                    parts.append("_")
            for c in ab.get("constraints", []):
                binding = c.get("binding", {})
                if "equality" in binding:
                    eq = binding["equality"]
                    parts.append(c["name"] + " = " + (ty(eq["type"]) if "type" in eq else "_"))
                else:
                    parts.append(c["name"] + ": " + " + ".join(bound(b) for b in binding.get("constraint", [])))
            return "<" + ", ".join(parts) + ">" if parts else ""
        if "parenthesized" in a:
            p = a["parenthesized"]
            out = "(" + ", ".join(ty(x) for x in p["inputs"]) + ")"
            return out + (" -> " + ty(p["output"]) if p.get("output") else "")
        return ""

    def poly(p):
        return p["trait"]["path"] + args(p["trait"].get("args"))

    def bound(b):
        if "trait_bound" in b:
            tb = b["trait_bound"]
            q = "?" if tb.get("modifier") == "maybe" else ""
            return q + tb["trait"]["path"] + args(tb["trait"].get("args"))
        if "outlives" in b:
            return b["outlives"]
        return "_"

    def generics(g):
        params = []
        for p in g["params"]:
            k = p["kind"]
            if "lifetime" in k:
                params.append(p["name"])
            elif "type" in k:
                if k["type"].get("is_synthetic"):
                    continue
                bounds = k["type"].get("bounds", [])
                params.append(p["name"] + (": " + " + ".join(bound(b) for b in bounds) if bounds else ""))
            elif "const" in k:
                params.append("const " + p["name"] + ": " + ty(k["const"]["type"]))
        where = []
        for w in g["where_predicates"]:
            if "bound_predicate" in w:
                bp = w["bound_predicate"]
                where.append(ty(bp["type"]) + ": " + " + ".join(bound(b) for b in bp["bounds"]))
        out = "<" + ", ".join(params) + ">" if params else ""
        return out, (" where " + ", ".join(where) if where else "")

    def fn(name, f):
        g, w = generics(f["generics"])
        h = f["header"]
        prefix = ("const " if h.get("is_const") else "") + ("async " if h.get("is_async") else "") + ("unsafe " if h.get("is_unsafe") else "")
        inputs = []
        for n, t in f["sig"]["inputs"]:
            if n == "self":
                rendered = ty(t)
                inputs.append({"Self": "self", "&Self": "&self", "&mut Self": "&mut self"}.get(rendered, "self: " + rendered))
            else:
                inputs.append(n + ": " + ty(t))
        out = f["sig"].get("output")
        return prefix + "fn " + name + g + "(" + ", ".join(inputs) + ")" + (" -> " + ty(out) if out else "") + w

    def walk(i, path):
        it = item(i)
        if it is None or it.get("crate_id") != 0:
            return
        (kind, v), = it["inner"].items()
        name = it.get("name")
        here = path + "::" + name if name else path
        if kind == "module":
            if path:
                lines.add("mod " + here)
            for c in v["items"]:
                walk(c, here if path else name)
        elif kind == "use":
            target = item(v["id"]) if v.get("id") is not None else None
            if v.get("is_glob"):
                lines.add("pub use " + path + "::" + v["source"] + "::*")
            elif target is not None and target.get("crate_id") == 0:
                walk_named(v["id"], path, v["name"])
            else:
                lines.add("pub use " + path + "::" + v["name"] + " = " + v["source"])
        else:
            walk_named(i, path, name)

    def walk_named(i, path, name):
        it = item(i)
        if it is None:
            return
        (kind, v), = it["inner"].items()
        here = path + "::" + name
        if kind == "module":
            lines.add("mod " + here)
            for c in v["items"]:
                walk(c, here)
        elif kind == "struct":
            g, w = generics(v["generics"])
            lines.add("struct " + here + g + w)
            k = v["kind"]
            if "plain" in k:
                for f in k["plain"]["fields"]:
                    fi = item(f)
                    if fi and fi.get("visibility") == "public":
                        lines.add("field " + here + "." + fi["name"] + ": " + ty(fi["inner"]["struct_field"]))
            elif "tuple" in k:
                fields = [item(f) for f in k["tuple"] if f is not None]
                lines.add("tuple " + here + "(" + ", ".join(ty(fi["inner"]["struct_field"]) for fi in fields if fi) + ")")
            impls(here, v["impls"])
        elif kind == "enum":
            g, w = generics(v["generics"])
            lines.add("enum " + here + g + w)
            for var in v["variants"]:
                vi = item(var)
                vk = vi["inner"]["variant"]["kind"]
                if vk == "plain":
                    lines.add("variant " + here + "::" + vi["name"])
                elif "tuple" in vk:
                    fields = [item(f) for f in vk["tuple"] if f is not None]
                    lines.add("variant " + here + "::" + vi["name"] + "(" + ", ".join(ty(fi["inner"]["struct_field"]) for fi in fields) + ")")
                else:
                    fields = [item(f) for f in vk["struct"]["fields"]]
                    lines.add("variant " + here + "::" + vi["name"] + " { " + ", ".join(fi["name"] + ": " + ty(fi["inner"]["struct_field"]) for fi in fields) + " }")
            impls(here, v["impls"])
        elif kind == "trait":
            g, w = generics(v["generics"])
            lines.add("trait " + here + g + w)
            for m in v["items"]:
                mi = item(m)
                if mi and "function" in mi["inner"]:
                    lines.add("trait-fn " + fn(here + "::" + mi["name"], mi["inner"]["function"]))
        elif kind == "function":
            lines.add(fn(here, v))
        elif kind == "constant":
            lines.add("const " + here + ": " + ty(v["type"]))
        elif kind == "static":
            lines.add("static " + here + ": " + ty(v["type"]))
        elif kind == "type_alias":
            g, _ = generics(v["generics"])
            lines.add("type " + here + g + " = " + ty(v["type"]))
        elif kind == "macro":
            lines.add("macro " + here)

    def impls(here, ids):
        for i in ids:
            im = item(i)
            if im is None:
                continue
            v = im["inner"]["impl"]
            if v.get("is_synthetic") or v.get("blanket_impl") is not None:
                continue
            if v.get("trait") is None:
                for m in v["items"]:
                    mi = item(m)
                    if mi and mi.get("visibility") == "public" and "function" in mi["inner"]:
                        lines.add("method " + fn(here + "::" + mi["name"], mi["inner"]["function"]))
                    elif mi and mi.get("visibility") == "public" and "assoc_const" in mi["inner"]:
                        lines.add("assoc-const " + here + "::" + mi["name"] + ": " + ty(mi["inner"]["assoc_const"]["type"]))
            else:
                t = v["trait"]
                lines.add("impl " + t["path"] + args(t.get("args")) + " for " + here)

    walk(doc["root"], "")
    for line in sorted(lines):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1])
