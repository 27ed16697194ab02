//! The documentation stays true to the repository: every relative link in the README and in
//! `docs/` resolves (file and heading), every `seglab` command in their shell blocks names
//! real subcommands and flags of the command-line interface, and every section a source
//! comment cites ("§5.4", "docs/design.md §2", "§6 step 3") is a heading of the page it
//! names, with that step or item.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The README and every page under `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("readable docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The markdown link targets `[text](target)` of a page, outside code blocks and code spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    targets
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap_or_default();
    let mut in_block = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if !in_block && line.starts_with('#') {
            found.push(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

fn broken_link(page: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, fragment) = match target.split_once('#') {
        Some((file, fragment)) => (file, Some(fragment)),
        None => (target, None),
    };
    let resolved = if file.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().expect("a page has a folder").join(file)
    };
    if !resolved.exists() {
        return Some(format!(
            "{}: link to {target}: no such file",
            page.display()
        ));
    }
    match fragment {
        Some(fragment) if resolved.extension().is_some_and(|ext| ext == "md") => {
            (!anchors(&resolved).iter().any(|a| a == fragment)).then(|| {
                format!(
                    "{}: link to {target}: no heading with anchor #{fragment}",
                    page.display()
                )
            })
        }
        _ => None,
    }
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("readable page");
        broken.extend(
            link_targets(&text)
                .iter()
                .filter_map(|target| broken_link(&page, target)),
        );
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The `seglab` command lines of a page's `sh` and `console` blocks, continuation lines joined
/// and comments dropped; `cargo run --release -- X` counts as `seglab X`.
fn command_lines(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_shell_block = false;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_shell_block = !in_shell_block && (lang == "sh" || lang == "console");
            continue;
        }
        if !in_shell_block {
            continue;
        }
        let line = trimmed.trim_start_matches("$ ");
        let continued = line.ends_with('\\');
        pending.push_str(line.trim_end_matches('\\'));
        pending.push(' ');
        if continued {
            continue;
        }
        let command = pending.split(" #").next().unwrap_or("").trim().to_string();
        pending.clear();
        let command = command
            .strip_prefix("cargo run --release -- ")
            .map(|rest| format!("seglab {rest}"))
            .unwrap_or(command);
        if command.starts_with("seglab ") {
            commands.push(command);
        }
    }
    commands
}

/// Checks one command line against the CLI: its leading words must be subcommands and every
/// `--flag` an argument of the subcommand reached (or of one above it).
fn check_command(line: &str) -> Result<(), String> {
    let mut command = seglab::cli::Cli::command();
    let mut ancestors_flags: Vec<String> = Vec::new();
    let mut subcommand_named = false;
    for token in line.split_whitespace().skip(1) {
        let token = token.trim_matches(|c| c == '[' || c == ']');
        if let Some(flag) = token.strip_prefix("--") {
            let name = flag.split('=').next().unwrap_or(flag);
            let known = name == "help"
                || ancestors_flags.iter().any(|f| f == name)
                || command
                    .get_arguments()
                    .any(|arg| arg.get_long() == Some(name));
            if !known {
                return Err(format!(
                    "`{line}`: `{}` has no flag --{name}",
                    command.get_name()
                ));
            }
        } else if let Some(sub) = command.find_subcommand(token).cloned() {
            ancestors_flags.extend(
                command
                    .get_arguments()
                    .filter(|arg| arg.is_global_set())
                    .filter_map(|arg| arg.get_long().map(str::to_string)),
            );
            command = sub;
            subcommand_named = true;
        } else if !subcommand_named {
            return Err(format!("`{line}`: `{token}` is not a seglab subcommand"));
        }
    }
    Ok(())
}

#[test]
fn every_documented_command_names_real_subcommands_and_flags() {
    let mut wrong = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("readable page");
        for line in command_lines(&text) {
            checked += 1;
            if let Err(err) = check_command(&line) {
                wrong.push(format!("{}: {err}", page.display()));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} command lines found in the docs"
    );
    assert!(
        wrong.is_empty(),
        "commands that do not exist:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_command_check_catches_a_wrong_flag_and_subcommand() {
    assert!(check_command("seglab sweep run spec.toml --jobs 2").is_ok());
    assert!(check_command("seglab sweep run spec.toml --jobz 2").is_err());
    assert!(check_command("seglab sweeps run spec.toml").is_err());
}

#[test]
fn anchors_follow_github() {
    assert_eq!(anchor(" Reading the demo"), "reading-the-demo");
    assert_eq!(
        anchor("Results on the published-scale phantom"),
        "results-on-the-published-scale-phantom"
    );
}

/// The sections of a page that cites them as §N.M: the number after `§` in each heading, with
/// the numbered list items (`1.`, `2.`, …) of the section's own text.
fn sections(page: &Path) -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(page).expect("readable page");
    let mut found: Vec<(String, Vec<u32>)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            if let Some((_, rest)) = line.split_once('§') {
                let number = rest.split_whitespace().next().unwrap_or("");
                found.push((number.to_string(), Vec::new()));
            }
        } else if let (Some((_, items)), Some((n, _))) = (found.last_mut(), line.split_once(". "))
            && let Ok(n) = n.parse::<u32>()
        {
            items.push(n);
        }
    }
    found
}

/// A `§` citation in a source file: the document it names, the section and the step or item
/// numbers after it.
#[derive(Debug, PartialEq)]
struct Citation {
    document: Cited,
    section: String,
    items: Vec<u32>,
}

#[derive(Debug, PartialEq)]
enum Cited {
    /// docs/published-code.md: named, or bare `§N.M` (the source's convention).
    PublishedCode,
    /// docs/design.md.
    Design,
    /// docs/mlflow.md.
    Mlflow,
    /// The thesis or the paper (shared/papers/), cited by their own numbers.
    Papers,
}

/// The `§` citations of a text. The document is the word before the `§` (on the line, or at the
/// end of the line before): `design.md`, `mlflow.md`, `thesis` or `paper`, or followed by "of
/// the thesis"; anything else cites docs/published-code.md.
fn citations(text: &str) -> Vec<Citation> {
    let mut found = Vec::new();
    let mut previous_line = "";
    for line in text.lines() {
        let mut rest = line;
        let mut before_len = 0;
        while let Some(at) = rest.find('§') {
            let before = &line[..before_len + at];
            let after = &rest[at + '§'.len_utf8()..];
            let section: String = after
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let section = section.trim_end_matches('.').to_string();
            let tail = &after[section.len()..];
            rest = tail;
            before_len = line.len() - rest.len();
            if section.is_empty() {
                continue; // §II-C: the paper's roman numerals
            }
            let words: Vec<&str> = before
                .trim_start()
                .trim_start_matches(['/', '!', '#'])
                .split_whitespace()
                .collect();
            let word = words
                .last()
                .copied()
                .or_else(|| previous_line.split_whitespace().last())
                .unwrap_or("")
                .trim_matches(|c: char| !c.is_alphanumeric() && c != '.');
            let document = if word.ends_with("design.md") {
                Cited::Design
            } else if word.ends_with("mlflow.md") {
                Cited::Mlflow
            } else if word == "thesis" || word == "paper" || tail.starts_with(" of the thesis") {
                Cited::Papers
            } else {
                Cited::PublishedCode
            };
            let items = [" step ", " item "]
                .iter()
                .find_map(|kind| tail.strip_prefix(kind))
                .map(|numbers| {
                    numbers
                        .split(|c: char| !c.is_ascii_digit() && c != '/')
                        .next()
                        .unwrap_or("")
                        .split('/')
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            found.push(Citation {
                document,
                section,
                items,
            });
        }
        previous_line = line;
    }
    found
}

/// Every `.rs` and `.md` file below `dir`.
fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path
            .extension()
            .is_some_and(|ext| ext == "rs" || ext == "md")
        {
            out.push(path);
        }
    }
}

#[test]
fn every_cited_section_is_a_heading_of_its_page() {
    let published = sections(&repo().join("docs/published-code.md"));
    let design = sections(&repo().join("docs/design.md"));
    let mlflow = sections(&repo().join("docs/mlflow.md"));
    let mut files = Vec::new();
    source_files(&repo().join("src"), &mut files);
    files.sort();
    let (mut checked, mut missing) = (0, Vec::new());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for citation in citations(&text) {
            let page = match citation.document {
                Cited::PublishedCode => ("docs/published-code.md", &published),
                Cited::Design => ("docs/design.md", &design),
                Cited::Mlflow => ("docs/mlflow.md", &mlflow),
                Cited::Papers => continue,
            };
            checked += 1;
            let section = page.1.iter().find(|(n, _)| *n == citation.section);
            let absent: Vec<&u32> = match section {
                None => {
                    missing.push(format!(
                        "{}: §{} is not a heading of {}",
                        file.display(),
                        citation.section,
                        page.0
                    ));
                    continue;
                }
                Some((_, items)) => citation
                    .items
                    .iter()
                    .filter(|n| !items.contains(n))
                    .collect(),
            };
            if !absent.is_empty() {
                missing.push(format!(
                    "{}: §{} of {} has no step or item {absent:?}",
                    file.display(),
                    citation.section,
                    page.0
                ));
            }
        }
    }
    assert!(checked > 50, "only {checked} citations found in src/");
    assert!(
        missing.is_empty(),
        "citations of sections that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn citations_name_their_document_section_and_steps() {
    let text = "//! docs/published-code.md §5.4\n/// (§5.4 step 5/7), thesis §5.3.1, see\n\
                //! docs/design.md\n//! §4; §6 step 3; §5.3.3 of the thesis; paper §II-C";
    let cited = |document, section: &str, items: &[u32]| Citation {
        document,
        section: section.to_string(),
        items: items.to_vec(),
    };
    assert_eq!(
        citations(text),
        vec![
            cited(Cited::PublishedCode, "5.4", &[]),
            cited(Cited::PublishedCode, "5.4", &[5, 7]),
            cited(Cited::Papers, "5.3.1", &[]),
            cited(Cited::Design, "4", &[]),
            cited(Cited::PublishedCode, "6", &[3]),
            cited(Cited::Papers, "5.3.3", &[]),
        ]
    );
}
