//! `index.html`: one self-contained page (inline CSS, no scripts) with the report's sections,
//! tables rendered by [`super::tables::render_html`] and figures linked from `figures/`.

use std::fmt::Write as _;

use super::index::{Doc, Item};
use super::tables::{html_escape, render_html};

const CSS: &str = "\
body{font-family:'DejaVu Sans',system-ui,sans-serif;max-width:1200px;margin:2em auto;\
padding:0 1em;color:#222;line-height:1.45}\
h1{font-size:1.7em;border-bottom:2px solid #0072b2;padding-bottom:.2em}\
h2{font-size:1.35em;margin-top:2em;border-bottom:1px solid #ccc}\
h3{font-size:1.05em;margin-bottom:.3em}\
nav ul{columns:2;padding-left:1.2em}\
table{border-collapse:collapse;margin:.6em 0 .4em;font-size:.9em}\
caption{caption-side:top;text-align:left;padding:.3em 0;max-width:1100px}\
th,td{padding:.25em .6em;border:0}\
thead tr:first-child th{border-top:2px solid #222}\
thead tr:last-child th{border-bottom:1px solid #222}\
tbody tr:last-child td{border-bottom:2px solid #222}\
tr.rule td{border-top:1px solid #bbb}\
th.group{border-bottom:1px solid #888}\
td.r,th.r{text-align:right}td.c,th.c{text-align:center}td.l,th.l{text-align:left}\
tbody tr:nth-child(even){background:#f6f8fa}\
p.note{font-size:.85em;color:#555;margin:.2em 0}\
p.files{font-size:.85em;color:#555}\
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #ddd}\
figcaption{font-size:.9em;color:#333;max-width:1100px}\
ul.warnings li{color:#8a4b00}\
code{background:#f2f2f2;padding:0 .2em}";

/// The report page.
pub(crate) fn render_page(doc: &Doc) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p>{}</p>\n",
        html_escape(&doc.title),
        html_escape(&doc.title),
        inline(&doc.intro)
    );
    out.push_str("<nav><ul>\n");
    for s in &doc.sections {
        let _ = writeln!(
            out,
            "<li><a href=\"#{}\">{}</a></li>",
            s.anchor,
            html_escape(&s.title)
        );
    }
    out.push_str("</ul></nav>\n");
    for s in &doc.sections {
        let _ = writeln!(
            out,
            "<section id=\"{}\">\n<h2>{}</h2>",
            s.anchor,
            html_escape(&s.title)
        );
        for item in &s.items {
            match item {
                Item::Para(p) => {
                    let _ = writeln!(out, "<p>{}</p>", inline(p));
                }
                Item::List(list) => {
                    out.push_str("<ul class=\"warnings\">\n");
                    for l in list {
                        let _ = writeln!(out, "<li>{}</li>", inline(l));
                    }
                    out.push_str("</ul>\n");
                }
                Item::Table { number, table } => {
                    let _ = writeln!(
                        out,
                        "<h3>Table {number}: {}</h3>",
                        html_escape(&table.title)
                    );
                    out.push_str(&render_html(table));
                    let _ = writeln!(
                        out,
                        "<p class=\"files\">Files: <a href=\"tables/{n}.md\">Markdown</a> · \
                         <a href=\"tables/{n}.tex\">LaTeX</a> · \
                         <a href=\"tables/{n}.csv\">CSV</a></p>",
                        n = table.name
                    );
                }
                Item::Figure(f) => {
                    let png = &f.files[0];
                    let _ = write!(
                        out,
                        "<figure id=\"fig-{}\">\n<h3>Figure {}: {}</h3>\n\
                         <a href=\"figures/{png}\"><img src=\"figures/{png}\" alt=\"{}\" \
                         loading=\"lazy\"></a>\n<figcaption><strong>Figure {}.</strong> {}",
                        f.number,
                        f.number,
                        html_escape(&f.title),
                        html_escape(&f.title),
                        f.number,
                        inline(&f.caption)
                    );
                    if let Some(svg) = f.files.iter().find(|x| x.ends_with(".svg")) {
                        let _ = write!(out, " (<a href=\"figures/{svg}\">SVG</a>)");
                    }
                    out.push_str("</figcaption>\n</figure>\n");
                }
            }
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Escapes text and turns `code` spans into `<code>`.
fn inline(s: &str) -> String {
    let escaped = html_escape(s);
    let mut out = String::with_capacity(escaped.len());
    let mut open = false;
    for ch in escaped.chars() {
        if ch == '`' {
            out.push_str(if open { "</code>" } else { "<code>" });
            open = !open;
        } else {
            out.push(ch);
        }
    }
    if open {
        out.push_str("</code>");
    }
    out
}
