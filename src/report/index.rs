//! Assembles a report: builds every table and figure in order, writes the table files, then
//! `index.md` (tables inline, figures with numbered captions) and, through [`super::html`],
//! `index.html`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::input::{ReportInput, u64_column};
use super::plots::{self, BoxPlot, Figure, LearningCurves, SliceFigure, SweepPlot, TimingBars};
use super::prepare::{Prepared, Task, model_label, model_rank};
use super::published;
use super::tables::{self, Rows, Table};
use super::timing::{self, TimingTable};
use super::{ReportError, ReportOptions, ReportSummary, html};
use crate::experiment::paths::ReportPaths;

/// One element of a report section.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    Para(String),
    List(Vec<String>),
    Table { number: usize, table: Table },
    Figure(FigureItem),
}

#[derive(Clone, Debug)]
pub(crate) struct FigureItem {
    pub number: usize,
    pub title: String,
    pub caption: String,
    /// Files under `figures/`, PNG first.
    pub files: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Section {
    pub title: String,
    pub anchor: String,
    pub items: Vec<Item>,
}

/// The whole report in memory (tables and figure references; figures are already on disk).
#[derive(Clone, Debug)]
pub(crate) struct Doc {
    pub title: String,
    pub intro: String,
    pub sections: Vec<Section>,
}

struct Builder<'a> {
    dir: &'a Path,
    sections: Vec<Section>,
    tables: usize,
    figures: usize,
    table_names: Vec<String>,
    figure_files: Vec<String>,
}

impl<'a> Builder<'a> {
    fn section(&mut self, title: &str, anchor: &str) {
        self.sections.push(Section {
            title: title.into(),
            anchor: anchor.into(),
            items: Vec::new(),
        });
    }

    fn push(&mut self, item: Item) {
        self.sections
            .last_mut()
            .expect("a section is open")
            .items
            .push(item);
    }

    fn table(&mut self, table: Table) -> Result<(), ReportError> {
        let dir = ReportPaths::new(self.dir).tables();
        for (ext, text) in [
            ("md", tables::render_md(&table)),
            ("tex", tables::render_tex(&table)),
            ("csv", tables::render_csv(&table)),
        ] {
            let path = dir.join(format!("{}.{ext}", table.name));
            std::fs::write(&path, text).map_err(ReportError::io(&path))?;
        }
        self.tables += 1;
        self.table_names.push(table.name.clone());
        let number = self.tables;
        self.push(Item::Table { number, table });
        Ok(())
    }

    fn figure(&mut self, title: String, caption: String, files: Vec<String>) {
        self.figures += 1;
        self.figure_files
            .extend(files.iter().map(|f| format!("figures/{f}")));
        let number = self.figures;
        self.push(Item::Figure(FigureItem {
            number,
            title,
            caption,
            files,
        }));
    }

    /// Renders `fig` as `figures/<name>.png` and `.svg` and adds it with `title` and `caption`.
    fn plot(
        &mut self,
        fig: &impl Figure,
        name: &str,
        title: String,
        caption: String,
    ) -> Result<(), ReportError> {
        let files = plots::render(fig, &self.figures_dir(), name)?;
        self.figure(title, caption, files);
        Ok(())
    }

    /// The folder the figures are written to.
    fn figures_dir(&self) -> PathBuf {
        ReportPaths::new(self.dir).figures()
    }

    fn next_table_number(&self) -> usize {
        self.tables + 1
    }
}

/// What every section of a report reads.
struct Context<'a> {
    input: &'a ReportInput,
    prep: &'a Prepared,
    options: &'a ReportOptions,
}

/// Builds the report of `input` into `dir` (which has `tables/` and `figures/`): the sections
/// in order, then `index.md` and `index.html`.
pub(crate) fn build_into(
    input: &ReportInput,
    dir: &Path,
    options: &ReportOptions,
) -> Result<ReportSummary, ReportError> {
    let prep = Prepared::new(input, options)?;
    let cx = Context {
        input,
        prep: &prep,
        options,
    };
    let mut b = Builder {
        dir,
        sections: Vec::new(),
        tables: 0,
        figures: 0,
        table_names: Vec::new(),
        figure_files: Vec::new(),
    };
    let mut warnings = prep.warnings.clone();
    overview_section(&mut b, &cx, &warnings);
    published_section(&mut b, &cx)?;
    results_sections(&mut b, &cx)?;
    learning_curves_section(&mut b, &cx)?;
    timing_section(&mut b, &cx)?;
    slices_section(&mut b, &cx, &mut warnings)?;
    if let Some(t) = tables::labels_table(&prep.trials, &prep.configs) {
        b.section("Tags and notes", "tags-and-notes");
        b.table(t)?;
    }
    if let Some(t) = tables::missing_table(&prep.missing) {
        b.section("Missing and incomplete trials", "missing");
        b.table(t)?;
    }
    write_index(dir, input, b.sections)?;
    warnings.dedup();
    Ok(ReportSummary {
        out_dir: dir.to_owned(),
        tables: b.table_names,
        figures: b.figure_files,
        finished_trials: prep.finished_count(),
        missing_trials: prep.missing.len(),
        warnings,
    })
}

/// The overview: trial counts by status, the aggregation, the NaN rule and any warnings.
fn overview_section(b: &mut Builder, cx: &Context, warnings: &[String]) {
    let Context {
        input,
        prep,
        options,
        ..
    } = cx;
    let agg = options.aggregation;
    let finished = prep.finished_count();
    b.section("Overview", "overview");
    let mut status_counts: Vec<(String, usize)> = Vec::new();
    for t in &prep.trials {
        match status_counts.iter_mut().find(|(s, _)| *s == t.status) {
            Some((_, n)) => *n += 1,
            None => status_counts.push((t.status.clone(), 1)),
        }
    }
    status_counts.sort();
    b.push(Item::Para(format!(
        "Sweep `{}`: {} trial(s) in the store ({}); {finished} finished with results and \
         enter the tables. {} trial(s) are missing or incomplete and are listed in the last \
         section.",
        input.sweep,
        prep.trials.len(),
        status_counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        prep.missing.len()
    )));
    b.push(Item::Para(format!(
        "Aggregation of the comparison and sweep tables and figures: {}. The std over folds \
         is a spread, not a confidence interval: fold estimates are correlated (Bengio & \
         Grandvalet, JMLR 5, 2004).",
        agg.describe()
    )));
    b.push(Item::Para(
        "Non-finite metric values (NaN, e.g. precision of an empty prediction or Dice when \
         reference and prediction are both empty) are excluded from every mean and counted \
         where they occur; they are never turned into numbers."
            .into(),
    ));
    if !warnings.is_empty() {
        b.push(Item::List(warnings.to_vec()));
    }
}

/// The published table the sweep reproduces, beside the measured values.
fn published_section(b: &mut Builder, cx: &Context) -> Result<(), ReportError> {
    let Context {
        input,
        prep,
        options,
        ..
    } = cx;
    let agg = options.aggregation;
    if let Some(table) = options
        .reproduces
        .as_deref()
        .and_then(published::metric_table)
    {
        b.section(&format!("Reproduction of {}", table.source), "published");
        match published::comparison(input, prep, table, agg, options.decimals)? {
            Some(t) => b.table(t)?,
            None => b.push(Item::Para(format!(
                "The sweep has no trials of the published table's classes ({}).",
                table.classes.join(", ")
            ))),
        }
    }

    Ok(())
}

/// The results of every task (see [`task_results`]).
fn results_sections(b: &mut Builder, cx: &Context) -> Result<(), ReportError> {
    let options = cx.options;
    let primary = options
        .metrics
        .iter()
        .find(|m| m.as_str() == "dice")
        .or(options.metrics.first())
        .cloned()
        .unwrap_or_else(|| "dice".into());
    for task in &cx.prep.tasks {
        task_results(b, cx, task, &primary)?;
    }
    Ok(())
}

/// One task's results: metric tables (per configuration, sweep, seed and fold), the box plot
/// of the primary metric, nested selection, paired comparisons with their forest plot, and
/// the sweep plots.
fn task_results(
    b: &mut Builder,
    cx: &Context,
    task: &Task,
    primary: &str,
) -> Result<(), ReportError> {
    let Context {
        input,
        prep,
        options,
        ..
    } = cx;
    let agg = options.aggregation;
    let comparisons = super::comparisons::task_comparisons(input, task, &options.metrics)?;
    b.section(
        &format!("Results — {}", task.name),
        &format!("results-{}", task.slug),
    );
    let seeds = distinct_count(prep, &task.key, "seed")?;
    let folds = distinct_count(prep, &task.key, "fold")?;
    let kinds = [
        (Rows::Configs, true),
        (
            Rows::Sweep,
            prep.swept.get(&task.key).is_some_and(|s| !s.is_empty()),
        ),
        (Rows::PerSeed, seeds > 1),
        (Rows::PerFold, folds > 1),
    ];
    for (kind, wanted) in kinds {
        if !wanted {
            continue;
        }
        if let Some(t) = tables::metric_table(
            prep,
            task,
            &options.metrics,
            agg,
            options.decimals,
            kind,
            tables::Inference {
                with_ci: options.ci,
                comparisons: &comparisons,
            },
        )? {
            b.table(t)?;
        }
    }
    if let Some(fig) = BoxPlot::build(prep, task, primary)? {
        let name = format!("boxplot-{}-{}", task.slug, super::prepare::slug(primary));
        b.plot(
            &fig,
            &name,
            fig.title.clone(),
            format!(
                "{} of every test case (one value per trial and test volume), per \
                 configuration; one panel per class. x axis: {} (unitless). Boxes: \
                 quartiles (linear interpolation); thick line: median; whiskers: the most \
                 extreme case within 1.5 × IQR of the box (Tukey); circles: cases beyond \
                 the whiskers. Labels give the number of cases n and excluded NaN cases.",
                super::prepare::metric_label(primary),
                super::prepare::metric_label(primary)
            ),
        )?;
    }
    if let Some(t) = super::selection::selection_table(input, task, primary, options.decimals)? {
        b.table(t)?;
    }
    if !comparisons.is_empty() {
        b.table(super::comparisons::comparisons_table(
            task,
            &comparisons,
            options.decimals,
        ))?;
    }
    if let Some(fig) = super::comparisons::forest_plot(task, primary, &comparisons) {
        let name = format!("forest-{}-{}", task.slug, super::prepare::slug(primary));
        b.plot(
            &fig,
            &name,
            fig.title.clone(),
            format!(
                "Paired differences A − B in {} between configurations, one row per class \
                 and pair, on the test cases both have (paired unit: {}). Point: mean \
                 difference; bar: 95 % percentile bootstrap interval resampling cases \
                 within folds; vertical line: no difference. The comparisons table gives \
                 n and the p-values.",
                super::prepare::metric_label(primary),
                super::paired::CASE_UNIT
            ),
        )?;
    }
    for key in prep.swept.get(&task.key).cloned().unwrap_or_default() {
        if let Some(fig) = SweepPlot::build(prep, task, &key, &options.metrics, agg)? {
            let name = format!("sweep-{}-{}", task.slug, super::prepare::slug(&key));
            b.plot(
                &fig,
                &name,
                fig.title.clone(),
                format!(
                    "Metrics versus the swept `{key}`, one panel per metric and class, one \
                     line per model. x axis: the value of `{key}` as configured; y axis: \
                     the metric (unitless). Points: {}; error bars: ± one std (none where \
                     a single unit remains).",
                    agg.describe()
                ),
            )?;
        }
    }
    Ok(())
}

/// Learning curves: one figure per task and model.
fn learning_curves_section(b: &mut Builder, cx: &Context) -> Result<(), ReportError> {
    let Context { prep, options, .. } = cx;
    let agg = options.aggregation;
    if prep.curves.height() > 0 {
        b.section("Learning curves", "learning-curves");
        for task in &prep.tasks {
            let mut models: Vec<String> = prep
                .configs_of(&task.key)
                .iter()
                .map(|c| c.model.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            models.sort_by_key(|m| model_rank(m));
            for model in models {
                if let Some(fig) = LearningCurves::build(prep, task, &model, agg)? {
                    let name = format!(
                        "learning-curves-{}-{}",
                        task.slug,
                        super::prepare::slug(&model)
                    );
                    b.plot(
                        &fig,
                        &name,
                        fig.title.clone(),
                        format!(
                            "Learning curves of {} ({}): one panel per training loss term \
                             and validation metric, one line per configuration. x axis: epoch; \
                             y axis: the value (unitless). Line: at each epoch, {}; band: ± one \
                             std. Trials that stopped early contribute to fewer epochs, so late \
                             epochs can rest on fewer units. Validation metrics come from the \
                             inner validation split, never from test volumes.",
                            model_label(&model),
                            task.name,
                            agg.describe_per_epoch().1
                        ),
                    )?;
                }
            }
        }
    }

    Ok(())
}

/// The timing breakdown of every task: the table in the thesis' layout, the published one
/// beside it when reproduced, and the stacked bars.
fn timing_section(b: &mut Builder, cx: &Context) -> Result<(), ReportError> {
    let Context {
        input,
        prep,
        options,
        ..
    } = cx;
    let mut timing_done = false;
    for task in &prep.tasks {
        let (rows, notes) = timing::timing_rows(input, prep, task)?;
        if rows.is_empty() {
            continue;
        }
        if !timing_done {
            b.section("Timing", "timing");
            b.push(Item::Para(timing::TIMING_MODEL.into()));
            timing_done = true;
        }
        let table = TimingTable {
            rows,
            include_testing: true,
            decimals: 2,
        };
        let n_trials: Vec<String> = table
            .rows
            .iter()
            .map(|r| format!("{} {}", r.model, r.n_trials))
            .collect();
        let mut t = table.to_table(
            &format!("timing-{}", task.slug),
            &format!("Time needed to train and test the models, {}", task.name),
            &format!(
                "Layout of the thesis' Table 5.7. Compute times are the mean over the trials \
                 of each model (one trial = one training run; trials: {}); annotation hours \
                 per volume from dataset.toml; annotated training volumes are the annotated \
                 dataset volumes outside a trial's test set. Ratios divide by the fastest \
                 model. The CSV gives every time in hours.",
                n_trials.join(", ")
            ),
        );
        t.notes = notes;
        let number = b.next_table_number();
        b.table(t)?;
        if let Some(reference) = options
            .reproduces
            .as_deref()
            .and_then(published::timing_table)
            .filter(|_| task.classes.len() == 2)
        {
            b.table(published::timing_comparison(reference, &table.rows))?;
        }
        let bars = TimingBars::new(format!("Where the hours go — {}", task.name), &table);
        let name = format!("timing-{}", task.slug);
        b.plot(
            &bars,
            &name,
            bars.title.clone(),
            format!(
                "Stacked time per model (hours): annotation of the training volumes, \
                 synthetic masks, training compute, annotation of the test volumes and \
                 testing compute; the total is printed at the end of each bar. x axis: time \
                 (h). The numbers are those of Table {number}."
            ),
        )?;
    }

    Ok(())
}

/// Slice overlays of the test volumes; a figure that cannot be drawn becomes a warning.
fn slices_section(
    b: &mut Builder,
    cx: &Context,
    warnings: &mut Vec<String>,
) -> Result<(), ReportError> {
    let Context { input, .. } = cx;
    if !input.slices.is_empty() {
        b.section("Slice overlays", "slices");
        for set in &input.slices {
            let fig = match SliceFigure::new(set) {
                Ok(f) => f,
                Err(e) => {
                    warnings.push(e.to_string());
                    b.push(Item::Para(format!("Skipped: {e}")));
                    continue;
                }
            };
            let name = format!("slices-{}", super::prepare::slug(&set.name));
            let file = plots::render_png(&fig, &b.figures_dir(), &name)?;
            let [nz, ny, nx] = set.image.spatial();
            b.figure(
                format!("Test volume {}, slice z = {}", set.name, fig.z()),
                format!(
                    "Slice z = {} of {nz} of test volume {} ({nx} × {ny} voxels; axes in \
                     voxels, y downwards). First panel: the image channels as a colour \
                     composite (Golgi red, nuclei green; each channel stretched to its \
                     0.5–99.5 percentiles in this slice). Other panels: ground truth and each \
                     model's prediction over a grey version of the image; filled: the mask, \
                     outline: its boundary; colours per class as in the legend.",
                    fig.z(),
                    set.name
                ),
                vec![file],
            );
        }
    }

    Ok(())
}

/// Writes `index.md` and `index.html` of the report in `dir`.
fn write_index(dir: &Path, input: &ReportInput, sections: Vec<Section>) -> Result<(), ReportError> {
    let doc = Doc {
        title: format!("Report: {}", input.sweep),
        intro: format!(
            "Generated by seglab {} from the store of sweep `{}`. Tables are also under \
             `tables/` as Markdown, LaTeX (booktabs) and CSV; figures under `figures/` as PNG \
             and SVG.",
            env!("CARGO_PKG_VERSION"),
            input.sweep
        ),
        sections,
    };
    let md = render_index_md(&doc);
    let path = ReportPaths::new(dir).index_md();
    std::fs::write(&path, md).map_err(ReportError::io(&path))?;
    let page = html::render_page(&doc);
    let path = ReportPaths::new(dir).index_html();
    std::fs::write(&path, page).map_err(ReportError::io(&path))?;
    Ok(())
}

fn distinct_count(prep: &Prepared, task: &str, column: &str) -> Result<usize, ReportError> {
    let df = prep.task_cases(task, polars::prelude::lit(true))?;
    let values = u64_column(&df, column).map_err(super::aggregate::polars_error("results"))?;
    Ok(values.into_iter().collect::<BTreeSet<_>>().len())
}

/// `index.md`: title, intro, a contents list, then every section.
pub(crate) fn render_index_md(doc: &Doc) -> String {
    let mut out = format!("# {}\n\n{}\n\n", doc.title, doc.intro);
    out.push_str("Contents:\n\n");
    for s in &doc.sections {
        let _ = writeln!(out, "- [{}](#{})", s.title, s.anchor);
    }
    out.push('\n');
    for s in &doc.sections {
        let _ = write!(out, "<a id=\"{}\"></a>\n\n## {}\n\n", s.anchor, s.title);
        for item in &s.items {
            match item {
                Item::Para(p) => {
                    let _ = write!(out, "{p}\n\n");
                }
                Item::List(list) => {
                    for l in list {
                        let _ = writeln!(out, "- {l}");
                    }
                    out.push('\n');
                }
                Item::Table { number, table } => {
                    let _ = write!(
                        out,
                        "### Table {number}: {}\n\n{}\n\n{}\nFiles: [Markdown](tables/{n}.md) · \
                         [LaTeX](tables/{n}.tex) · [CSV](tables/{n}.csv)\n\n",
                        table.title,
                        table.caption,
                        tables::render_md_body(table),
                        n = table.name
                    );
                }
                Item::Figure(f) => {
                    let png = &f.files[0];
                    let _ = write!(
                        out,
                        "### Figure {}: {}\n\n![{}](figures/{png})\n\n*Figure {}.* {}",
                        f.number, f.title, f.title, f.number, f.caption
                    );
                    if let Some(svg) = f.files.iter().find(|x| x.ends_with(".svg")) {
                        let _ = write!(out, " ([SVG](figures/{svg}))");
                    }
                    out.push_str("\n\n");
                }
            }
        }
    }
    out
}
