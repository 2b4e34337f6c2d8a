"""Writes the README's "Build your own app" blocks as a crate: the ```toml block as the
[dependencies] of Cargo.toml (connect-axum taken by path), the ```rust block as src/main.rs, and
each ```sql block at the path its first line names."""
import pathlib
import re
import sys

readme, crate, library = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
text = pathlib.Path(readme).read_text()
start = next(m for m in re.finditer(r"^(#+) .*your own app.*$", text, re.M | re.I))
rest = text[start.end():]
end = re.search(rf"^#{{1,{len(start.group(1))}}} ", rest, re.M)
section = rest[: end.start()] if end else rest
blocks = re.findall(r"^```(\w+)\n(.*?)^```", section, re.M | re.S)
toml = next(body for lang, body in blocks if lang == "toml")
rust = next(body for lang, body in blocks if lang == "rust")
sqls = [body for lang, body in blocks if lang == "sql"]
assert toml.startswith("[dependencies]"), "the toml block is the app's [dependencies]"
toml = re.sub(r"^connect-axum = .*$", f'connect-axum = {{ path = "{library}" }}', toml, flags=re.M)
(crate / "src").mkdir(parents=True, exist_ok=True)
(crate / "Cargo.toml").write_text(
    '[package]\nname = "bookmarks"\nversion = "0.1.0"\nedition = "2024"\npublish = false\n\n'
    + toml
    + "\n[workspace]\n"
)
(crate / "src" / "main.rs").write_text(rust)
assert sqls, "a ```sql block: the app's first migration"
for sql in sqls:
    first = sql.splitlines()[0]
    path = re.fullmatch(r"-- (\S+\.sql)", first)
    assert path, f"the sql block's first line names its file: {first!r}"
    target = crate / path.group(1)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(sql)
print(f"wrote {crate}: Cargo.toml, src/main.rs, " + ", ".join(re.match(r"-- (\S+)", s).group(1) for s in sqls))
