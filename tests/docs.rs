//! The documentation's relative links resolve: every `[text](path)` and `[text](path#anchor)` of
//! the README, ARCHITECTURE.md, the pages under docs/ and the crates' READMEs names a file that
//! exists and, where it has an anchor, a heading of that file (by GitHub's slug of the heading).
//! Links into the web, mail links, and anything inside code are not checked.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn every_relative_link_of_the_readme_and_the_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pages = pages(root);
    assert!(
        pages.contains(&root.join("docs/README.md")),
        "docs/README.md is one of the pages read"
    );
    let mut headings = HashMap::new();
    let mut broken = Vec::new();
    for page in &pages {
        let text = fs::read_to_string(page).unwrap();
        for (line, target) in links(&text) {
            if let Err(why) = resolve(page, &target, &mut headings) {
                let at = page.strip_prefix(root).unwrap().display();
                broken.push(format!("{at}:{line}: ({target}) {why}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that do not resolve:\n{}",
        broken.join("\n")
    );
}

#[test]
fn a_heading_slug_is_lowercase_without_punctuation_with_hyphens_for_spaces() {
    let slugs = slugs(
        "# Data residency (realm migration)\n\
         ## Browsers calling the remote (`requestRemote`)\n\
         ## 1 000 and 100 000 tenants\n\
         ### Tokens\n### Tokens\n\
         ```\n# not a heading\n```\n",
    );
    assert_eq!(
        slugs,
        [
            "data-residency-realm-migration",
            "browsers-calling-the-remote-requestremote",
            "1-000-and-100-000-tenants",
            "tokens",
            "tokens-1",
        ]
    );
}

#[test]
fn links_in_code_and_links_into_the_web_are_not_checked() {
    let text = "[a](a.md) `[b](b.md)` [c](https://c.example) [d](mailto:d@example.com)\n\
                ```\n[e](e.md)\n```\n\
                [f](f.md#g \"title\")\n";
    assert_eq!(
        links(text),
        [(1, "a.md".to_owned()), (5, "f.md#g".to_owned())]
    );
}

/// README.md, ARCHITECTURE.md, every Markdown file under docs/, and crates/*/README.md.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    markdown_under(&root.join("docs"), &mut pages);
    for krate in fs::read_dir(root.join("crates")).unwrap() {
        let readme = krate.unwrap().path().join("README.md");
        if readme.is_file() {
            pages.push(readme);
        }
    }
    pages.sort();
    pages
}

fn markdown_under(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            markdown_under(&path, into);
        } else if path.extension().is_some_and(|e| e == "md") {
            into.push(path);
        }
    }
}

/// The relative link targets of `text` with their line numbers, outside code blocks and inline
/// code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in prose_lines(text) {
        let line = without_inline_code(line);
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            let web = ["http://", "https://", "mailto:"]
                .iter()
                .any(|scheme| target.starts_with(scheme));
            if !target.is_empty() && !web {
                found.push((number, target.to_owned()));
            }
            rest = &rest[end..];
        }
    }
    found
}

/// The lines of `text` outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((index + 1, line));
        }
    }
    lines
}

/// `line` with each code span (text between two runs of the same number of backticks) blanked.
fn without_inline_code(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = run_at(i);
        let mut close = i + run;
        while close < chars.len() && !(chars[close] == '`' && run_at(close) == run) {
            close += if chars[close] == '`' {
                run_at(close)
            } else {
                1
            };
        }
        if close < chars.len() {
            out.extend(std::iter::repeat_n(' ', close + run - i));
            i = close + run;
        } else {
            out.extend(&chars[i..i + run]);
            i += run;
        }
    }
    out
}

/// Whether `target`, a link of `page`, names a file that exists and, after `#`, one of its
/// headings; `headings` keeps each Markdown file's slugs once read.
fn resolve(
    page: &Path,
    target: &str,
    headings: &mut HashMap<PathBuf, Vec<String>>,
) -> Result<(), String> {
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().unwrap().join(path)
    };
    if !file.exists() {
        return Err("no such file".to_owned());
    }
    let Some(anchor) = anchor else {
        return Ok(());
    };
    if file.extension().is_none_or(|e| e != "md") {
        return Err("an anchor into a file that is not Markdown".to_owned());
    }
    let slugs = headings
        .entry(file.clone())
        .or_insert_with(|| slugs(&fs::read_to_string(&file).unwrap()));
    if slugs.iter().any(|slug| slug == anchor) {
        Ok(())
    } else {
        Err(format!("no heading whose anchor is #{anchor}"))
    }
}

/// The anchors GitHub gives the headings of `text`, in order: the heading lowercased, punctuation
/// other than `-` and `_` dropped, spaces made `-`; a repeated one gets `-1`, `-2`, ….
fn slugs(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut slugs = Vec::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        let Some(title) = line[hashes..].strip_prefix(' ') else {
            continue;
        };
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let slug: String = title
            .trim()
            .trim_end_matches('#')
            .trim_end()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let count = seen.entry(slug.clone()).or_default();
        slugs.push(match *count {
            0 => slug,
            n => format!("{slug}-{n}"),
        });
        *count += 1;
    }
    slugs
}
