//! The report's figures, drawn with plotters: learning curves, box plots, sweep plots,
//! stacked timing bars, slice overlays and the forest plot of paired differences. Each figure is a plain struct built from
//! aggregated frames (numbers come from [`crate::report::aggregate`]; nothing here computes a
//! statistic) and drawn through [`style::Figure`], which renders PNG and SVG with the bundled
//! font.

pub mod boxplot;
pub mod forest;
pub mod learning_curves;
pub mod slices;
pub mod style;
pub mod sweep;
pub mod timing_bars;

pub use boxplot::BoxPlot;
pub use forest::ForestPlot;
pub use learning_curves::LearningCurves;
pub use slices::SliceFigure;
pub use style::{Figure, render, render_png};
pub use sweep::SweepPlot;
pub use timing_bars::TimingBars;
