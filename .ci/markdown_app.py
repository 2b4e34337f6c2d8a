"""Writes an app that a Markdown page shows as a crate: in the section whose heading names it, the
```toml block as the [dependencies] of Cargo.toml (connect-axum taken by path), the ```rust block
as src/main.rs, and each ```sql block at the path its first line names.

usage: markdown_app.py PAGE HEADING NAME CRATE LIBRARY
  PAGE     the Markdown file
  HEADING  words of the section's heading (case-insensitive); the section ends at the next
           heading of its level or higher
  NAME     the package's name (and its binary's)
  CRATE    the folder to write the crate into
  LIBRARY  the path of crates/connect-axum"""
import pathlib
import re
import sys

page, heading, name, crate, library = sys.argv[1:6]
crate = pathlib.Path(crate)
text = pathlib.Path(page).read_text()
start = re.search(rf"^(#+) .*{re.escape(heading)}.*$", text, re.M | re.I)
assert start, f"{page}: no heading names {heading!r}"
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
    f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2024"\npublish = false\n\n'
    + toml
    + "\n[workspace]\n"
)
(crate / "src" / "main.rs").write_text(rust)
for sql in sqls:
    first = sql.splitlines()[0]
    path = re.fullmatch(r"-- (\S+\.sql)", first)
    assert path, f"the sql block's first line names its file: {first!r}"
    target = crate / path.group(1)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(sql)
written = ["Cargo.toml", "src/main.rs"] + [re.match(r"-- (\S+)", s).group(1) for s in sqls]
print(f"wrote {crate} from {page}: " + ", ".join(written))
