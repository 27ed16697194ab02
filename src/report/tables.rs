//! One table model, four renderings: Markdown ([`render_md`]), LaTeX with booktabs and the
//! best value per column in bold ([`render_tex`]), tidy CSV ([`render_csv`]) and HTML
//! ([`render_html`]). The builders at the bottom turn aggregated frames into the report's
//! tables (per-class comparison, per-fold and per-seed rows, sweeps, missing trials); they
//! format numbers but compute no statistics (every mean comes from
//! [`aggregate`](super::aggregate::aggregate)).

use std::collections::HashMap;
use std::fmt::Write as _;

use polars::prelude::*;

use super::ReportError;
use super::aggregate::{Aggregation, aggregate, polars_error};
use super::input::{f64_column, string_column, u64_column};
use super::prepare::{
    Config, Missing, Prepared, Task, Trial, class_label, compare_values, higher_is_better,
    metric_label, model_label,
};

/// A table: columns (optionally grouped under a spanning header), rows of cells, a caption
/// that states how the numbers were made, and notes.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// File stem under `tables/` and LaTeX label (`tab:<name>`).
    pub name: String,
    pub title: String,
    pub caption: String,
    pub columns: Vec<ColumnSpec>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

/// One column: its header, an optional group header spanning neighbouring columns with the
/// same group, and the CSV key.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSpec {
    pub group: Option<String>,
    pub label: String,
    /// CSV header (a [`Cell::Stat`] column becomes `<key>_mean`, `_std`, `_n`, `_n_nan`).
    pub key: String,
    pub align: Align,
}

impl ColumnSpec {
    /// A column without a group header.
    pub fn new(label: impl Into<String>, key: impl Into<String>, align: Align) -> Self {
        ColumnSpec {
            group: None,
            label: label.into(),
            key: key.into(),
            align,
        }
    }

    /// The column of one metric and class (`<metric>_<class>`), under the metric's group
    /// header.
    pub fn metric_class(metric: &str, class: &str, align: Align) -> Self {
        ColumnSpec {
            group: Some(metric_label(metric)),
            label: class_label(class),
            key: format!("{metric}_{class}"),
            align,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
    Center,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub cells: Vec<Cell>,
    /// Draw a rule above this row (a new group of rows).
    pub rule_above: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Empty,
    Text(String),
    /// A formatted value (`text`) and the number behind it for CSV.
    Value {
        text: String,
        value: Option<f64>,
    },
    Stat(Stat),
}

/// One aggregated cell: mean ± std of `n` units.
#[derive(Clone, Debug, PartialEq)]
pub struct Stat {
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub n: u32,
    pub n_nan: u32,
    pub decimals: usize,
    /// Best value of its column (bold).
    pub best: bool,
    /// Print `n` next to the value (it differs from the row's usual count).
    pub show_n: bool,
    /// A 95 % confidence interval of the mean, shown as `mean [low, high]` instead of
    /// `mean ± std` (`ReportOptions::ci`).
    pub ci: Option<(f64, f64)>,
    /// Differs from its column's best configuration (Holm-adjusted paired Wilcoxon p < 0.05;
    /// `report::comparisons`), marked † and explained in the caption.
    pub differs_from_best: bool,
}

impl Stat {
    fn value_text(&self, pm: &str) -> String {
        if let (Some(m), Some((lo, hi))) = (self.mean, self.ci) {
            return format!("{m:.d$} [{lo:.d$}, {hi:.d$}]", d = self.decimals);
        }
        match (self.mean, self.std) {
            (None, _) => "–".into(),
            (Some(m), Some(s)) => format!("{m:.d$}{pm}{s:.d$}", d = self.decimals),
            (Some(m), None) => format!("{m:.d$}", d = self.decimals),
        }
    }

    fn note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.show_n {
            parts.push(format!("n={}", self.n));
        }
        if self.n_nan > 0 {
            parts.push(format!("{} NaN", self.n_nan));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Markdown: a bold title line, the caption, a pipe table and the notes.
pub fn render_md(table: &Table) -> String {
    format!(
        "**{}.** {}\n\n{}",
        table.title,
        table.caption,
        render_md_body(table)
    )
}

/// The pipe table and notes of [`render_md`], without title and caption.
pub(crate) fn render_md_body(table: &Table) -> String {
    let mut out = String::new();
    let header: Vec<String> = table
        .columns
        .iter()
        .map(|c| match &c.group {
            Some(g) => format!("{g} {}", c.label),
            None => c.label.clone(),
        })
        .map(|s| md_escape(&s))
        .collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = table
        .columns
        .iter()
        .map(|c| match c.align {
            Align::Left => ":---",
            Align::Right => "---:",
            Align::Center => ":---:",
        })
        .collect();
    let _ = writeln!(out, "|{}|", align.join("|"));
    for row in &table.rows {
        let cells: Vec<String> = row.cells.iter().map(md_cell).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    for note in &table.notes {
        let _ = write!(out, "\n{}\n", md_escape(note));
    }
    out
}

fn md_cell(cell: &Cell) -> String {
    match cell {
        Cell::Empty => String::new(),
        Cell::Text(s) => md_escape(s),
        Cell::Value { text, .. } => md_escape(text),
        Cell::Stat(s) => {
            let v = s.value_text(" ± ");
            let v = if s.best && s.mean.is_some() {
                format!("**{v}**")
            } else {
                v
            };
            let v = if s.differs_from_best {
                format!("{v}†")
            } else {
                v
            };
            match s.note() {
                Some(n) => format!("{v} ({n})"),
                None => v,
            }
        }
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// LaTeX: a `table` float with a booktabs `tabular` (needs `\usepackage{booktabs}`); grouped
/// columns get a `\multicolumn` header with `\cmidrule`s; best values in bold.
pub fn render_tex(table: &Table) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "% {} — generated by seglab {}; needs \\usepackage{{booktabs}}",
        table.name,
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("\\begin{table}[htbp]\n  \\centering\n");
    let _ = writeln!(
        out,
        "  \\caption{{{}. {}}}",
        tex_escape(&table.title),
        tex_escape(&table.caption)
    );
    let _ = writeln!(out, "  \\label{{tab:{}}}", table.name);
    let spec: String = table
        .columns
        .iter()
        .map(|c| match c.align {
            Align::Left => 'l',
            Align::Right => 'r',
            Align::Center => 'c',
        })
        .collect();
    let _ = writeln!(out, "  \\begin{{tabular}}{{{spec}}}");
    out.push_str("    \\toprule\n");
    let groups = column_groups(&table.columns);
    if groups.iter().any(|g| g.0.is_some()) {
        let mut cells = Vec::new();
        let mut rules = Vec::new();
        let mut start = 1;
        for (group, span) in &groups {
            match group {
                Some(g) => {
                    cells.push(format!("\\multicolumn{{{span}}}{{c}}{{{}}}", tex_escape(g)));
                    rules.push(format!("\\cmidrule(lr){{{start}-{}}}", start + span - 1));
                }
                None => cells.extend(std::iter::repeat_n(String::new(), *span)),
            }
            start += span;
        }
        let _ = writeln!(out, "    {} \\\\", cells.join(" & "));
        let _ = writeln!(out, "    {}", rules.join(" "));
    }
    let header: Vec<String> = table.columns.iter().map(|c| tex_escape(&c.label)).collect();
    let _ = writeln!(out, "    {} \\\\", header.join(" & "));
    out.push_str("    \\midrule\n");
    for (i, row) in table.rows.iter().enumerate() {
        if row.rule_above && i > 0 {
            out.push_str("    \\midrule\n");
        }
        let cells: Vec<String> = row.cells.iter().map(tex_cell).collect();
        let _ = writeln!(out, "    {} \\\\", cells.join(" & "));
    }
    out.push_str("    \\bottomrule\n  \\end{tabular}\n");
    for note in &table.notes {
        let _ = writeln!(
            out,
            "  \\par\\smallskip{{\\footnotesize {}}}",
            tex_escape(note)
        );
    }
    out.push_str("\\end{table}\n");
    out
}

fn tex_cell(cell: &Cell) -> String {
    match cell {
        Cell::Empty => String::new(),
        Cell::Text(s) => tex_escape(s),
        Cell::Value { text, .. } => tex_escape(text),
        Cell::Stat(s) => {
            let v = s.value_text(" $\\pm$ ");
            let v = if s.mean.is_none() {
                "--".into()
            } else if s.best {
                format!("\\textbf{{{v}}}")
            } else {
                v
            };
            let v = if s.differs_from_best {
                format!("{v}$^\\dagger$")
            } else {
                v
            };
            match s.note() {
                Some(n) => format!("{v}\\textsuperscript{{{}}}", tex_escape(&n)),
                None => v,
            }
        }
    }
}

/// Escapes LaTeX specials and maps the few non-ASCII signs seglab prints.
pub fn tex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(ch);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '±' => out.push_str("$\\pm$"),
            '×' => out.push_str("$\\times$"),
            '–' => out.push_str("--"),
            '—' => out.push_str("---"),
            '≥' => out.push_str("$\\geq$"),
            '≤' => out.push_str("$\\leq$"),
            'µ' | 'μ' => out.push_str("\\textmu{}"),
            'Σ' => out.push_str("$\\Sigma$"),
            '·' => out.push_str("$\\cdot$"),
            '→' => out.push_str("$\\rightarrow$"),
            '÷' => out.push_str("$\\div$"),
            _ => out.push(ch),
        }
    }
    out
}

/// CSV (RFC 4180): one header line of keys; statistic cells spread over `_mean`, `_std`,
/// `_n` and `_n_nan` columns with full precision, so the numbers can be re-used.
pub fn render_csv(table: &Table) -> String {
    let mut out = String::new();
    let mut header = Vec::new();
    let stat_column: Vec<bool> = (0..table.columns.len())
        .map(|i| {
            table
                .rows
                .iter()
                .any(|r| matches!(r.cells.get(i), Some(Cell::Stat(_))))
        })
        .collect();
    let ci_column: Vec<bool> = (0..table.columns.len())
        .map(|i| {
            table
                .rows
                .iter()
                .any(|r| matches!(r.cells.get(i), Some(Cell::Stat(s)) if s.ci.is_some()))
        })
        .collect();
    for ((c, is_stat), has_ci) in table.columns.iter().zip(&stat_column).zip(&ci_column) {
        if *is_stat {
            for s in ["mean", "std", "n", "n_nan"] {
                header.push(format!("{}_{s}", c.key));
            }
            if *has_ci {
                header.push(format!("{}_ci_low", c.key));
                header.push(format!("{}_ci_high", c.key));
            }
        } else {
            header.push(c.key.clone());
        }
    }
    out.push_str(
        &header
            .iter()
            .map(|h| csv_field(h))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push('\n');
    for row in &table.rows {
        let mut fields = Vec::new();
        for ((cell, is_stat), has_ci) in row.cells.iter().zip(&stat_column).zip(&ci_column) {
            let width = if *has_ci { 6 } else { 4 };
            match cell {
                Cell::Stat(s) => {
                    fields.push(opt_num(s.mean));
                    fields.push(opt_num(s.std));
                    fields.push(s.n.to_string());
                    fields.push(s.n_nan.to_string());
                    if *has_ci {
                        fields.push(opt_num(s.ci.map(|c| c.0)));
                        fields.push(opt_num(s.ci.map(|c| c.1)));
                    }
                }
                _ if *is_stat => fields.extend(std::iter::repeat_n(String::new(), width)),
                Cell::Empty => fields.push(String::new()),
                Cell::Text(t) => fields.push(csv_field(t)),
                Cell::Value { text, value } => fields.push(match value {
                    Some(v) => num(*v),
                    None => csv_field(text),
                }),
            }
        }
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// A CSV number: 10 decimals, trailing zeros removed (enough for any metric, and stable
/// against the last-bit differences of parallel summation).
fn num(v: f64) -> String {
    let s = format!("{v:.10}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" { "0".into() } else { s.to_string() }
}

fn opt_num(v: Option<f64>) -> String {
    v.map(num).unwrap_or_default()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// HTML: a `<table>` with a `<caption>`, grouped headers and the notes below.
pub fn render_html(table: &Table) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "<table id=\"tab-{}\">", html_escape(&table.name));
    let _ = writeln!(
        out,
        "<caption><strong>{}.</strong> {}</caption>",
        html_escape(&table.title),
        html_escape(&table.caption)
    );
    out.push_str("<thead>\n");
    let groups = column_groups(&table.columns);
    if groups.iter().any(|g| g.0.is_some()) {
        out.push_str("<tr>");
        for (group, span) in &groups {
            match group {
                Some(g) => {
                    let _ = write!(
                        out,
                        "<th colspan=\"{span}\" class=\"group\">{}</th>",
                        html_escape(g)
                    );
                }
                None => {
                    for _ in 0..*span {
                        out.push_str("<th></th>");
                    }
                }
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("<tr>");
    for c in &table.columns {
        let _ = write!(
            out,
            "<th class=\"{}\">{}</th>",
            align_class(c.align),
            html_escape(&c.label)
        );
    }
    out.push_str("</tr>\n</thead>\n<tbody>\n");
    for row in &table.rows {
        out.push_str(if row.rule_above {
            "<tr class=\"rule\">"
        } else {
            "<tr>"
        });
        for (cell, c) in row.cells.iter().zip(&table.columns) {
            let _ = write!(out, "<td class=\"{}\">", align_class(c.align));
            match cell {
                Cell::Empty => {}
                Cell::Text(t) => out.push_str(&html_escape(t)),
                Cell::Value { text, .. } => out.push_str(&html_escape(text)),
                Cell::Stat(s) => {
                    let v = html_escape(&s.value_text(" ± "));
                    if s.best && s.mean.is_some() {
                        let _ = write!(out, "<strong>{v}</strong>");
                    } else {
                        out.push_str(&v);
                    }
                    if s.differs_from_best {
                        out.push('†');
                    }
                    if let Some(n) = s.note() {
                        let _ = write!(out, " <small>({})</small>", html_escape(&n));
                    }
                }
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    for note in &table.notes {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", html_escape(note));
    }
    out
}

fn align_class(a: Align) -> &'static str {
    match a {
        Align::Left => "l",
        Align::Right => "r",
        Align::Center => "c",
    }
}

pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Runs of neighbouring columns with the same group: (group, span).
fn column_groups(columns: &[ColumnSpec]) -> Vec<(Option<String>, usize)> {
    let mut out: Vec<(Option<String>, usize)> = Vec::new();
    for c in columns {
        match out.last_mut() {
            Some((g, span)) if g.is_some() && *g == c.group => *span += 1,
            _ => out.push((c.group.clone(), 1)),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------

/// Which rows a metric table has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// One row per configuration (the thesis' layout); best value per column in bold.
    Configs,
    /// One row per configuration and fold: mean ± std over the fold's test volumes (and
    /// seeds), pooled.
    PerFold,
    /// One row per configuration and seed, aggregated over folds.
    PerSeed,
    /// Only swept configurations, with one column per swept key; best in bold.
    Sweep,
}

/// A per-class metric table of `task`: columns metric × class (the thesis' Tables 5.1–5.6
/// and the paper's Table II), cells mean ± std.
/// What a metric table adds to mean ± std: 95 % intervals (`ReportOptions::ci`) and the
/// paired comparisons behind its † marks (`report::comparisons`).
#[derive(Clone, Copy)]
pub(crate) struct Inference<'a> {
    pub with_ci: bool,
    pub comparisons: &'a [super::paired::ComparisonRow],
}

pub(crate) fn metric_table(
    prep: &Prepared,
    task: &Task,
    metrics: &[String],
    aggregation: Aggregation,
    decimals: usize,
    rows_kind: Rows,
    inference: Inference<'_>,
) -> Result<Option<Table>, ReportError> {
    let Inference {
        with_ci,
        comparisons,
    } = inference;
    let cases = prep.task_cases(&task.key, lit(true))?;
    if cases.height() == 0 {
        return Ok(None);
    }
    let present = present_metrics(&cases, metrics);
    if present.is_empty() {
        return Ok(None);
    }
    let swept: Vec<String> = prep.swept.get(&task.key).cloned().unwrap_or_default();
    let (extra_key, aggregation): (Option<&str>, Aggregation) = match rows_kind {
        Rows::Configs | Rows::Sweep => (None, aggregation),
        Rows::PerFold => (Some("fold"), Aggregation::Pooled),
        Rows::PerSeed => (Some("seed"), Aggregation::OverFolds),
    };
    let mut group: Vec<&str> = vec!["config"];
    if let Some(k) = extra_key {
        group.push(k);
    }
    group.extend(["class", "metric"]);
    let stats = aggregate(&cases, &group, aggregation)?;
    let lookup = StatLookup::new(&stats, extra_key)?;
    let with_ci = with_ci && matches!(rows_kind, Rows::Configs | Rows::Sweep);
    let intervals = if with_ci {
        super::intervals::case_mean_intervals(&cases)?
    } else {
        Default::default()
    };

    let configs: Vec<&Config> = prep
        .configs_of(&task.key)
        .into_iter()
        .filter(|c| rows_kind != Rows::Sweep || !c.params.is_empty())
        .filter(|c| lookup.has_config(&c.label))
        .collect();
    if configs.is_empty() {
        return Ok(None);
    }

    let columns = metric_columns(rows_kind, &swept, extra_key, &present, &task.classes);
    let first_stat = columns.len() - present.len() * task.classes.len();

    let row_builder = MetricRows {
        rows_kind,
        extra_key,
        swept: &swept,
        present: &present,
        classes: &task.classes,
        lookup: &lookup,
        intervals: &intervals,
        decimals,
    };
    let mut rows = Vec::new();
    for (ci, config) in configs.iter().enumerate() {
        let units: Vec<Option<String>> = match extra_key {
            None => vec![None],
            Some(_) => lookup.units(&config.label).into_iter().map(Some).collect(),
        };
        for (ui, unit) in units.iter().enumerate() {
            rows.push(row_builder.row(config, unit.as_deref(), ci, ui));
        }
    }
    if matches!(rows_kind, Rows::Configs | Rows::Sweep) && rows.len() > 1 {
        mark_best(
            &mut rows,
            first_stat,
            &columns,
            &present,
            task.classes.len(),
        );
    }
    let marked = rows_kind == Rows::Configs
        && mark_differences(&mut rows, first_stat, &configs, &present, task, comparisons);

    let (name, title, caption) =
        metric_caption(rows_kind, task, &swept, aggregation, marked, with_ci);
    let notes = nan_note(&rows).into_iter().collect();
    Ok(Some(Table {
        name,
        title,
        caption,
        columns,
        rows,
        notes,
    }))
}

/// The requested metrics that occur in `cases`, in the requested order.
fn present_metrics(cases: &DataFrame, metrics: &[String]) -> Vec<String> {
    metrics
        .iter()
        .filter(|m| {
            cases
                .column("metric")
                .ok()
                .and_then(|c| {
                    c.str()
                        .ok()
                        .map(|s| s.iter().any(|v| v == Some(m.as_str())))
                })
                .unwrap_or(false)
        })
        .cloned()
        .collect()
}

/// The columns of a metric table: the model, the swept keys (sweep table), the fold or seed
/// (per-unit tables), n, trials, then one statistic column per metric and class.
fn metric_columns(
    rows_kind: Rows,
    swept: &[String],
    extra_key: Option<&str>,
    present: &[String],
    classes: &[String],
) -> Vec<ColumnSpec> {
    let mut columns = vec![ColumnSpec::new("Model", "model", Align::Left)];
    if rows_kind == Rows::Sweep {
        for k in swept {
            columns.push(ColumnSpec::new(k.clone(), k.clone(), Align::Right));
        }
    }
    if let Some(k) = extra_key {
        columns.push(ColumnSpec::new(
            if k == "fold" { "Fold" } else { "Seed" },
            k,
            Align::Right,
        ));
    }
    columns.push(ColumnSpec::new("n", "n", Align::Right));
    columns.push(ColumnSpec::new("Trials", "trials", Align::Right));
    for m in present {
        for c in classes {
            columns.push(ColumnSpec::metric_class(m, c, Align::Center));
        }
    }

    columns
}

/// What every row of one metric table is built from.
struct MetricRows<'a> {
    rows_kind: Rows,
    extra_key: Option<&'a str>,
    swept: &'a [String],
    present: &'a [String],
    classes: &'a [String],
    lookup: &'a StatLookup,
    intervals: &'a HashMap<super::intervals::CellKey, (f64, f64)>,
    decimals: usize,
}

impl MetricRows<'_> {
    /// The row of `config` (the `ci`-th) for `unit` (its `ui`-th fold or seed, or None).
    fn row(&self, config: &Config, unit: Option<&str>, ci: usize, ui: usize) -> Row {
        let (rows_kind, extra_key, lookup) = (self.rows_kind, self.extra_key, self.lookup);
        // the sweep table shows the swept values in their own columns
        let label = if rows_kind == Rows::Sweep {
            model_label(&config.model)
        } else {
            config.label.clone()
        };
        let mut cells = vec![Cell::Text(if ui == 0 || extra_key.is_none() {
            label
        } else {
            String::new()
        })];
        if rows_kind == Rows::Sweep {
            for k in self.swept {
                let v = config
                    .params
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| "–".into());
                cells.push(Cell::Text(v));
            }
        }
        if let Some(u) = unit {
            cells.push(Cell::Text(u.to_string()));
        }
        let mut stat_cells = Vec::new();
        for m in self.present {
            for c in self.classes {
                let s = lookup.get(&config.label, unit, c, m);
                stat_cells.push(Cell::Stat(Stat {
                    mean: s.and_then(|s| s.mean),
                    std: s.and_then(|s| s.std),
                    n: s.map(|s| s.n).unwrap_or(0),
                    n_nan: s.map(|s| s.n_nan).unwrap_or(0),
                    decimals: if higher_is_better(m) {
                        self.decimals
                    } else {
                        2
                    },
                    best: false,
                    show_n: false,
                    ci: self
                        .intervals
                        .get(&(config.label.clone(), c.clone(), m.clone()))
                        .copied(),
                    differs_from_best: false,
                }));
            }
        }
        // the row's n: the most common count; cells that differ show their own
        let row_n = most_common(stat_cells.iter().filter_map(|c| match c {
            Cell::Stat(s) if s.mean.is_some() => Some(s.n),
            _ => None,
        }));
        let row_trials = lookup.trials(&config.label, unit);
        for cell in &mut stat_cells {
            if let Cell::Stat(s) = cell {
                s.show_n = s.mean.is_some() && Some(s.n) != row_n;
            }
        }
        let n = row_n.unwrap_or(0);
        cells.push(Cell::Value {
            text: n.to_string(),
            value: Some(f64::from(n)),
        });
        cells.push(Cell::Value {
            text: row_trials.to_string(),
            value: Some(f64::from(row_trials)),
        });
        cells.extend(stat_cells);
        Row {
            cells,
            rule_above: extra_key.is_some() && ui == 0 && ci > 0,
        }
    }
}

/// The name, title and caption of a metric table; the caption states the aggregation and,
/// where they appear, the significance marks and the confidence intervals.
fn metric_caption(
    rows_kind: Rows,
    task: &Task,
    swept: &[String],
    aggregation: Aggregation,
    marked: bool,
    with_ci: bool,
) -> (String, String, String) {
    let (name, title, caption) = match rows_kind {
        Rows::Configs => (
            format!("comparison-{}", task.slug),
            format!("Per-class results, {}", task.name),
            format!(
                "Cells: {}. Best value per column in bold. n: {} behind each mean (a cell \
                 with a different n shows its own); Trials: trials behind the row.",
                aggregation.describe(),
                aggregation.unit()
            ),
        ),
        Rows::PerFold => (
            format!("per-fold-{}", task.slug),
            format!("Per-fold results, {}", task.name),
            "Cells: for each fold, the mean ± sample std (ddof = 1) over the fold's test \
             volumes and seeds (pooled); n counts (volume, seed) cases; Trials: the fold's \
             trials (one per seed)."
                .to_string(),
        ),
        Rows::PerSeed => (
            format!("per-seed-{}", task.slug),
            format!("Per-seed results, {}", task.name),
            "Cells: for each seed, the mean over each fold's test volumes, then the mean ± \
             sample std (ddof = 1) over folds; n counts folds."
                .to_string(),
        ),
        Rows::Sweep => (
            format!("sweep-{}", task.slug),
            format!("Swept parameters, {}", task.name),
            format!(
                "Metric per value of the swept parameters ({}). Cells: {}. Best value per \
                 column in bold.",
                swept.join(", "),
                aggregation.describe()
            ),
        ),
    };
    let caption = if marked {
        format!(
            "{caption} †: differs from the column's best configuration (bold) on paired test \
             cases, Holm-adjusted Wilcoxon p < {} (comparisons table).",
            super::comparisons::ALPHA
        )
    } else {
        caption
    };
    let caption = if with_ci {
        format!(
            "{caption} With a 95 % CI: mean [low, high], the percentile bootstrap interval of \
             the mean over test cases ({} resamples of cases within folds, seed {}); it treats \
             the trained models as fixed (docs/statistics.md).",
            crate::stats::bootstrap::DEFAULT_RESAMPLES,
            super::intervals::SEED
        )
    } else {
        caption
    };
    (name, title, caption)
}

/// The note on non-finite case values behind the table's cells, if there are any.
fn nan_note(rows: &[Row]) -> Option<String> {
    let nan_total: u32 = rows
        .iter()
        .flat_map(|r| &r.cells)
        .filter_map(|c| match c {
            Cell::Stat(s) => Some(s.n_nan),
            _ => None,
        })
        .sum();
    (nan_total > 0).then(|| {
        format!(
            "NaN: {nan_total} case value(s) were not finite (e.g. precision of an empty \
             prediction) and are excluded from the means; \"k NaN\" marks the cells."
        )
    })
}

fn most_common(values: impl Iterator<Item = u32>) -> Option<u32> {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(v, c)| (c, v))
        .map(|(v, _)| v)
}

/// Marks the best mean of every statistic column, compared at the printed precision (ties
/// are all bold).
fn mark_best(
    rows: &mut [Row],
    first: usize,
    columns: &[ColumnSpec],
    metrics: &[String],
    classes: usize,
) {
    for j in first..columns.len() {
        let metric = &metrics[(j - first) / classes.max(1)];
        let higher = higher_is_better(metric);
        let key = |s: &Stat| -> Option<i64> {
            s.mean
                .map(|m| (m * 10f64.powi(s.decimals as i32)).round() as i64)
        };
        let best = rows
            .iter()
            .filter_map(|r| match &r.cells[j] {
                Cell::Stat(s) => key(s),
                _ => None,
            })
            .reduce(|a, b| if higher { a.max(b) } else { a.min(b) });
        let Some(best) = best else { continue };
        for r in rows.iter_mut() {
            if let Cell::Stat(s) = &mut r.cells[j] {
                s.best = key(s) == Some(best);
            }
        }
    }
}

/// Marks (†) the cells whose configuration differs from the column's best one with a
/// Holm-adjusted p below `comparisons::ALPHA`; rows are `configs` in order. True when any
/// comparison was available.
fn mark_differences(
    rows: &mut [Row],
    first: usize,
    configs: &[&Config],
    metrics: &[String],
    task: &Task,
    comparisons: &[super::paired::ComparisonRow],
) -> bool {
    if comparisons.is_empty() || rows.len() != configs.len() {
        return false;
    }
    let classes = task.classes.len().max(1);
    for j in first..rows.first().map_or(first, |r| r.cells.len()) {
        let (metric, class) = (
            &metrics[(j - first) / classes],
            &task.classes[(j - first) % classes],
        );
        let is_best = |r: &Row| matches!(&r.cells[j], Cell::Stat(s) if s.best);
        let Some(best) = rows.iter().position(is_best) else {
            continue;
        };
        for (i, row) in rows.iter_mut().enumerate() {
            let Cell::Stat(s) = &mut row.cells[j] else {
                continue;
            };
            if s.best {
                continue;
            }
            let found = comparisons.iter().find(|c| {
                let pair = |x: &str, y: &str| {
                    super::comparisons::arm_matches(x, configs[best])
                        && super::comparisons::arm_matches(y, configs[i])
                };
                c.metric == *metric && c.class == *class && (pair(&c.a, &c.b) || pair(&c.b, &c.a))
            });
            s.differs_from_best = found.is_some_and(|c| c.p_holm < super::comparisons::ALPHA);
        }
    }
    true
}

#[derive(Clone, Copy)]
struct StatValue {
    mean: Option<f64>,
    std: Option<f64>,
    n: u32,
    n_nan: u32,
    n_trials: u32,
}

/// Index of an aggregated frame keyed by (config, unit, class, metric).
struct StatLookup {
    map: HashMap<(String, Option<String>, String, String), StatValue>,
    units: HashMap<String, Vec<String>>,
}

impl StatLookup {
    fn new(stats: &DataFrame, unit: Option<&str>) -> Result<Self, ReportError> {
        let e = polars_error("aggregate");
        let config = string_column(stats, "config").map_err(&e)?;
        let units = match unit {
            Some(u) => string_column(stats, u).map_err(&e)?,
            None => vec![None; stats.height()],
        };
        let class = string_column(stats, "class").map_err(&e)?;
        let metric = string_column(stats, "metric").map_err(&e)?;
        let mean = f64_column(stats, "mean").map_err(&e)?;
        let std = f64_column(stats, "std").map_err(&e)?;
        let n = u64_column(stats, "n").map_err(&e)?;
        let n_nan = u64_column(stats, "n_nan").map_err(&e)?;
        let n_trials = u64_column(stats, "n_trials").map_err(&e)?;
        let mut map = HashMap::new();
        let mut unit_lists: HashMap<String, Vec<String>> = HashMap::new();
        for i in 0..stats.height() {
            let cfg = config[i].clone().unwrap_or_default();
            if let Some(u) = &units[i] {
                let list = unit_lists.entry(cfg.clone()).or_default();
                if !list.contains(u) {
                    list.push(u.clone());
                }
            }
            map.insert(
                (
                    cfg,
                    units[i].clone(),
                    class[i].clone().unwrap_or_default(),
                    metric[i].clone().unwrap_or_default(),
                ),
                StatValue {
                    mean: mean[i],
                    std: std[i],
                    n: n[i].unwrap_or(0) as u32,
                    n_nan: n_nan[i].unwrap_or(0) as u32,
                    n_trials: n_trials[i].unwrap_or(0) as u32,
                },
            );
        }
        for list in unit_lists.values_mut() {
            list.sort_by(|a, b| compare_values(a, b));
        }
        Ok(Self {
            map,
            units: unit_lists,
        })
    }

    fn has_config(&self, config: &str) -> bool {
        self.map.keys().any(|k| k.0 == config)
    }

    fn units(&self, config: &str) -> Vec<String> {
        self.units.get(config).cloned().unwrap_or_default()
    }

    fn get(
        &self,
        config: &str,
        unit: Option<&str>,
        class: &str,
        metric: &str,
    ) -> Option<StatValue> {
        self.map
            .get(&(
                config.to_string(),
                unit.map(str::to_owned),
                class.to_string(),
                metric.to_string(),
            ))
            .copied()
    }

    /// The largest number of trials behind any cell of a row.
    fn trials(&self, config: &str, unit: Option<&str>) -> u32 {
        self.map
            .iter()
            .filter(|(k, _)| k.0 == config && k.1.as_deref() == unit)
            .map(|(_, v)| v.n_trials)
            .max()
            .unwrap_or(0)
    }
}

/// The list of trials without rows in the tables.
pub(crate) fn missing_table(missing: &[Missing]) -> Option<Table> {
    if missing.is_empty() {
        return None;
    }
    let col = |label: &str, key: &str, align| ColumnSpec::new(label, key, align);
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "–".into());
    Some(Table {
        name: "missing-trials".into(),
        title: "Missing and incomplete trials".into(),
        caption: format!(
            "{} trial(s) have no rows in the tables above: they are running, failed, were \
             killed or interrupted, finished without results, or are absent from the store.",
            missing.len()
        ),
        columns: vec![
            col("Model", "model", Align::Left),
            col("Fold", "fold", Align::Right),
            col("Seed", "seed", Align::Right),
            col("Trial", "trial_id", Align::Left),
            col("Status", "status", Align::Left),
            col("Detail", "detail", Align::Left),
        ],
        rows: missing
            .iter()
            .map(|m| Row {
                cells: vec![
                    Cell::Text(m.config.clone()),
                    Cell::Text(opt(m.fold)),
                    Cell::Text(opt(m.seed)),
                    Cell::Text(m.trial_id.clone().unwrap_or_else(|| "–".into())),
                    Cell::Text(m.status.clone()),
                    Cell::Text(m.detail.clone()),
                ],
                rule_above: false,
            })
            .collect(),
        notes: Vec::new(),
    })
}

/// The free-text tags and notes of the trials, one row per configuration and distinct
/// (tags, notes) pair with its trial count; None when no trial has any.
pub(crate) fn labels_table(trials: &[Trial], configs: &[Config]) -> Option<Table> {
    let mut rows: Vec<(String, String, String, usize)> = Vec::new();
    for t in trials
        .iter()
        .filter(|t| !t.tags.is_empty() || t.notes.is_some())
    {
        let key = (
            configs[t.config].label.clone(),
            t.tags.join(", "),
            t.notes.clone().unwrap_or_default(),
        );
        match rows
            .iter_mut()
            .find(|r| (&r.0, &r.1, &r.2) == (&key.0, &key.1, &key.2))
        {
            Some(r) => r.3 += 1,
            None => rows.push((key.0, key.1, key.2, 1)),
        }
    }
    if rows.is_empty() {
        return None;
    }
    let col = |label: &str, key: &str, align| ColumnSpec::new(label, key, align);
    Some(Table {
        name: "tags-and-notes".into(),
        title: "Tags and notes".into(),
        caption: "The free-text tags and notes of the spec and its grid blocks, per \
                  configuration (they are not part of a trial's identity)."
            .into(),
        columns: vec![
            col("Model", "model", Align::Left),
            col("Tags", "tags", Align::Left),
            col("Notes", "notes", Align::Left),
            col("Trials", "trials", Align::Right),
        ],
        rows: rows
            .into_iter()
            .map(|(config, tags, notes, n)| Row {
                cells: vec![
                    Cell::Text(config),
                    Cell::Text(tags),
                    // One line per cell: the notes' lines (blank ones dropped) side by side.
                    Cell::Text(
                        notes
                            .lines()
                            .filter(|l| !l.trim().is_empty())
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    Cell::Text(n.to_string()),
                ],
                rule_above: false,
            })
            .collect(),
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mean: f64, best: bool) -> Cell {
        Cell::Stat(Stat {
            mean: Some(mean),
            std: Some(0.01),
            n: 3,
            n_nan: 0,
            decimals: 4,
            best,
            show_n: false,
            ci: None,
            differs_from_best: false,
        })
    }

    fn sample() -> Table {
        Table {
            name: "t".into(),
            title: "Title".into(),
            caption: "Mean ± std over folds.".into(),
            columns: vec![
                ColumnSpec::new("Model", "model", Align::Left),
                ColumnSpec {
                    group: Some("Dice".into()),
                    label: "Nuclei".into(),
                    key: "dice_nuclei".into(),
                    align: Align::Center,
                },
                ColumnSpec {
                    group: Some("Dice".into()),
                    label: "Golgi".into(),
                    key: "dice_golgi".into(),
                    align: Align::Center,
                },
            ],
            rows: vec![
                Row {
                    cells: vec![
                        Cell::Text("U-Net".into()),
                        stat(0.7756, false),
                        stat(0.6834, true),
                    ],
                    rule_above: false,
                },
                Row {
                    cells: vec![
                        Cell::Text("a, \"b\" & c_d".into()),
                        stat(0.7947, true),
                        Cell::Stat(Stat {
                            mean: None,
                            std: None,
                            n: 0,
                            n_nan: 2,
                            decimals: 4,
                            best: false,
                            show_n: false,
                            ci: None,
                            differs_from_best: false,
                        }),
                    ],
                    rule_above: false,
                },
            ],
            notes: vec![],
        }
    }

    #[test]
    fn markdown_bolds_the_best_and_marks_nan() {
        let md = render_md(&sample());
        assert!(md.contains("| Model | Dice Nuclei | Dice Golgi |"), "{md}");
        assert!(md.contains("**0.6834 ± 0.0100**"), "{md}");
        assert!(md.contains("| – (2 NaN) |"), "{md}");
    }

    #[test]
    fn latex_uses_booktabs_groups_and_escapes() {
        let tex = render_tex(&sample());
        assert!(tex.contains("\\multicolumn{2}{c}{Dice}"), "{tex}");
        assert!(tex.contains("\\cmidrule(lr){2-3}"), "{tex}");
        assert!(tex.contains("\\textbf{0.7947 $\\pm$ 0.0100}"), "{tex}");
        assert!(tex.contains("a, \"b\" \\& c\\_d"), "{tex}");
        assert!(tex.contains("\\toprule") && tex.contains("\\bottomrule"));
    }

    #[test]
    fn csv_spreads_statistics_and_quotes_text() {
        let csv = render_csv(&sample());
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "model,dice_nuclei_mean,dice_nuclei_std,dice_nuclei_n,dice_nuclei_n_nan,\
             dice_golgi_mean,dice_golgi_std,dice_golgi_n,dice_golgi_n_nan"
        );
        assert_eq!(
            lines.next().unwrap(),
            "U-Net,0.7756,0.01,3,0,0.6834,0.01,3,0"
        );
        assert_eq!(
            lines.next().unwrap(),
            "\"a, \"\"b\"\" & c_d\",0.7947,0.01,3,0,,,0,2"
        );
    }

    #[test]
    fn html_escapes_and_groups() {
        let html = render_html(&sample());
        assert!(
            html.contains("<th colspan=\"2\" class=\"group\">Dice</th>"),
            "{html}"
        );
        assert!(html.contains("a, &quot;b&quot; &amp; c_d"), "{html}");
        assert!(html.contains("<strong>0.6834 ± 0.0100</strong>"), "{html}");
    }
}
