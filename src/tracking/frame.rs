//! Small polars helpers of the store: building frames column by column, typed column access
//! with errors that name the column, and the diagonal concatenation of parts whose `param.*`
//! columns differ (the lean polars feature set has no `diagonal_concat`).

use std::path::Path;

use polars::prelude::*;

use super::{Result, TrackingError};

/// Collects named columns, then checks they have one height.
#[derive(Default)]
pub(crate) struct Cols(Vec<Column>);

impl Cols {
    pub fn push<T, P: ?Sized>(&mut self, name: &str, values: T)
    where
        Series: NamedFrom<T, P>,
    {
        self.0.push(Column::new(name.into(), values));
    }

    pub fn finish(self, height: usize) -> Result<DataFrame> {
        DataFrame::new(height, self.0).map_err(|e| TrackingError::polars("building rows", e))
    }
}

/// Typed access to the columns of a store frame.
pub(crate) struct Reader<'a>(&'a DataFrame);

macro_rules! typed {
    ($name:ident, $ca:ty) => {
        pub fn $name(&self, col: &str) -> Result<&'a $ca> {
            self.0
                .column(col)
                .and_then(|c| c.$name())
                .map_err(|e| TrackingError::Query(format!("column `{col}`: {e}")))
        }
    };
}

impl<'a> Reader<'a> {
    pub fn new(df: &'a DataFrame) -> Self {
        Reader(df)
    }
    typed!(str, StringChunked);
    typed!(u32, UInt32Chunked);
    typed!(u64, UInt64Chunked);
    typed!(i64, Int64Chunked);
    typed!(f64, Float64Chunked);
    typed!(bool, BooleanChunked);
}

/// Checks a part read from `path` against the table's fixed columns: a fixed column with another
/// type is an error naming the file; missing fixed columns become nulls (parts of older
/// versions); extra columns are kept.
pub(crate) fn conform(df: DataFrame, base: &Schema, path: &Path) -> Result<DataFrame> {
    let height = df.height();
    let mut out = Vec::with_capacity(df.width().max(base.len()));
    for (name, dtype) in base.iter() {
        match df.column(name.as_str()) {
            Ok(c) if c.dtype() == dtype => out.push(c.clone()),
            Ok(c) if c.dtype() == &DataType::Null => out.push(
                c.cast(dtype)
                    .map_err(|e| TrackingError::polars(path.display().to_string(), e))?,
            ),
            Ok(c) => {
                return Err(TrackingError::ReadPart {
                    path: path.to_path_buf(),
                    message: format!("column `{name}` is {}, expected {dtype}", c.dtype()),
                });
            }
            Err(_) => out.push(Column::full_null(name.clone(), height, dtype)),
        }
    }
    for c in df.columns() {
        if !base.contains(c.name()) {
            out.push(c.clone());
        }
    }
    DataFrame::new(height, out).map_err(|e| TrackingError::polars(path.display().to_string(), e))
}

/// Stacks conformed parts: the fixed columns first, then every extra column seen in any part
/// (sorted by name), null where a part lacks it. An empty list gives an empty frame with the
/// fixed columns.
pub(crate) fn concat_diagonal(parts: Vec<DataFrame>, base: &Schema) -> Result<DataFrame> {
    let mut extra: Vec<(PlSmallStr, DataType)> = Vec::new();
    for df in &parts {
        for c in df.columns() {
            if base.contains(c.name()) {
                continue;
            }
            match extra.iter().find(|(n, _)| n == c.name()) {
                None => extra.push((c.name().clone(), c.dtype().clone())),
                Some((_, t)) if t == c.dtype() || c.dtype() == &DataType::Null => {}
                Some((_, t)) if t == &DataType::Null => {
                    let slot = extra.iter_mut().find(|(n, _)| n == c.name());
                    slot.expect("found above").1 = c.dtype().clone();
                }
                Some((_, t)) => {
                    return Err(TrackingError::Query(format!(
                        "column `{}` has type {t} in one part and {} in another",
                        c.name(),
                        c.dtype()
                    )));
                }
            }
        }
    }
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    let mut schema = base.clone();
    for (n, t) in &extra {
        schema.with_column(n.clone(), t.clone());
    }
    if parts.is_empty() {
        return Ok(DataFrame::empty_with_schema(&schema));
    }
    let mut aligned = Vec::with_capacity(parts.len());
    for df in parts {
        let height = df.height();
        let mut cols = Vec::with_capacity(schema.len());
        for (name, dtype) in schema.iter() {
            let c = match df.column(name.as_str()) {
                Ok(c) if c.dtype() == dtype => c.clone(),
                Ok(c) => c
                    .cast(dtype)
                    .map_err(|e| TrackingError::polars("aligning parts", e))?,
                Err(_) => Column::full_null(name.clone(), height, dtype),
            };
            cols.push(c);
        }
        aligned.push(
            DataFrame::new(height, cols).map_err(|e| TrackingError::polars("aligning parts", e))?,
        );
    }
    let mut frames = aligned.into_iter();
    let mut df = frames.next().expect("not empty");
    for next in frames {
        df.vstack_mut_owned(next)
            .map_err(|e| TrackingError::polars("stacking parts", e))?;
    }
    df.rechunk_mut_par();
    Ok(df)
}
