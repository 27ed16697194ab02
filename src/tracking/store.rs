//! [`Store`]: one sweep's store folder, written as immutable Parquet parts and read back as
//! polars frames (the layout and schema are in the `tracking` module doc).
//!
//! Writing a part: the frame goes to a hidden temporary file in the table folder (fsynced when
//! the store is durable), then the final name `<trial_id>-a<attempt>-<seq>.parquet` is claimed
//! with a no-replace rename (or a hard link where that is missing), which fails instead of
//! overwriting when another writer took that name first; the next sequence number is tried
//! then. Readers only list names that do not start
//! with `.`, so a half-written part is never visible (docs/design.md §2).

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use polars::prelude::*;
use polars_io::parquet::read::ParquetReader;
use polars_io::prelude::SerReader;
use polars_parquet::write::{
    CompressionOptions, Encoding, FileWriter, KeyValue, StatisticsOptions, Version, WriteOptions,
    get_dtype_encoding, row_group_iter, schema_to_metadata_key,
};

use super::canonical::{self, Canonical};
use super::frame;
use super::rows::{EpochRow, ResultRow, Row, Table, TimingRow, TrialEvent};
use super::{Result, TrackingError};

/// Temporary files of writers on other machines (a shared filesystem) are removed once they are
/// this old; those of this machine as soon as their process is gone.
const FOREIGN_TEMP_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Distinguishes the temporary files of one process (several `Store` values may coexist).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A sweep's store folder (`experiments/<sweep>/store/`): atomic part writes, table reads and
/// the canonical view. Cheap to share between threads (`&Store` writes are safe in parallel).
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    durable: bool,
    /// Next sequence number to try per (table, trial, attempt).
    next_seq: Mutex<HashMap<(Table, String, u32), u32>>,
}

impl Store {
    /// Opens the store at `root` for writing, creating its folders when missing, and removes the
    /// temporary files that killed writers left behind (see [`Store::clean_temp_files`]).
    pub fn create(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for t in Table::ALL {
            let dir = root.join(t.name());
            std::fs::create_dir_all(&dir).map_err(|e| TrackingError::io(&dir, e))?;
        }
        let store = Store::at(root);
        store.clean_temp_files()?;
        Ok(store)
    }

    /// Opens an existing store (for reading, or writing by a process that did not create it).
    /// Errors when `root` has no `trials/` folder.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        if !root.join(Table::Trials.name()).is_dir() {
            return Err(TrackingError::NotAStore { path: root });
        }
        Ok(Store::at(root))
    }

    fn at(root: PathBuf) -> Store {
        Store {
            root,
            durable: true,
            next_seq: Mutex::new(HashMap::new()),
        }
    }

    /// Durable stores (the default) fsync each part before publishing it and the folder after,
    /// so a part survives a power cut as well as a killed process. Tests and benchmarks on
    /// throw-away folders may turn this off.
    pub fn with_durable(mut self, durable: bool) -> Store {
        self.durable = durable;
        self
    }

    /// The store folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one table.
    pub fn table_dir(&self, table: Table) -> PathBuf {
        self.root.join(table.name())
    }

    /// Records one status event of a trial attempt; returns the part written.
    pub fn write_trial_event(&self, event: &TrialEvent) -> Result<PathBuf> {
        let parts = self.write_trial_events(std::slice::from_ref(event))?;
        Ok(parts.into_iter().next().expect("one event gives one part"))
    }

    /// Records several events, one part per (trial, attempt) in order of first appearance;
    /// within a part, later events are later in time.
    pub fn write_trial_events(&self, events: &[TrialEvent]) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for group in group_by_attempt(events, |e| (&e.trial_id, e.attempt)) {
            let first = group[0];
            validate_trial_id(&first.trial_id)?;
            let owned: Vec<TrialEvent> = group.into_iter().cloned().collect();
            out.push(
                self.write_part(Table::Trials, &first.trial_id, first.attempt, |seq| {
                    TrialEvent::to_frame(&owned, seq)
                })?,
            );
        }
        Ok(out)
    }

    /// Appends training-curve rows: one part per (trial, attempt) present in `rows`.
    pub fn write_epochs(&self, rows: &[EpochRow]) -> Result<Vec<PathBuf>> {
        self.write_rows(rows)
    }

    /// Appends test-metric rows: one part per (trial, attempt) present in `rows`.
    pub fn write_results(&self, rows: &[ResultRow]) -> Result<Vec<PathBuf>> {
        self.write_rows(rows)
    }

    /// Appends phase timings: one part per (trial, attempt) present in `rows`.
    pub fn write_timings(&self, rows: &[TimingRow]) -> Result<Vec<PathBuf>> {
        self.write_rows(rows)
    }

    fn write_rows<R: Row + Clone>(&self, rows: &[R]) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for group in group_by_attempt(rows, |r| (r.trial_id(), r.attempt())) {
            let first = group[0];
            validate_trial_id(first.trial_id())?;
            let owned: Vec<R> = group.into_iter().cloned().collect();
            let df = R::to_frame(&owned)?;
            out.push(
                self.write_part(R::TABLE, first.trial_id(), first.attempt(), |_| {
                    Ok(df.clone())
                })?,
            );
        }
        Ok(out)
    }

    /// Writes one part: temporary file, then a no-replace rename to the first free sequence
    /// number of (table, trial, attempt).
    fn write_part(
        &self,
        table: Table,
        trial_id: &str,
        attempt: u32,
        make: impl Fn(u32) -> Result<DataFrame>,
    ) -> Result<PathBuf> {
        let dir = self.table_dir(table);
        let key = (table, trial_id.to_string(), attempt);
        let mut seq = *self.lock_seq().get(&key).unwrap_or(&0);
        let mut scanned = false;
        loop {
            let name = part_name(trial_id, attempt, seq);
            let final_path = dir.join(&name);
            let tmp = dir.join(temp_name(&name));
            let mut df = make(seq)?;
            self.write_temp(&tmp, &mut df, None)?;
            match publish(&tmp, &final_path) {
                Ok(()) => {
                    if self.durable {
                        sync_dir(&dir)?;
                    }
                    self.lock_seq().insert(key, seq + 1);
                    return Ok(final_path);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let _ = std::fs::remove_file(&tmp);
                    seq = if scanned {
                        seq + 1
                    } else {
                        scanned = true;
                        self.max_seq(table, trial_id, attempt)?
                            .map_or(seq + 1, |m| m.max(seq) + 1)
                    };
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(TrackingError::io(final_path, e));
                }
            }
        }
    }

    fn lock_seq(&self) -> std::sync::MutexGuard<'_, HashMap<(Table, String, u32), u32>> {
        // A writer that panicked leaves a plain map behind; it stays usable.
        self.next_seq.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Encodes `df` (with optional key-value metadata) into the new file `tmp`.
    fn write_temp(
        &self,
        tmp: &Path,
        df: &mut DataFrame,
        metadata: Option<Vec<(String, String)>>,
    ) -> Result<()> {
        // Encoded in memory first: one write call instead of many small ones.
        let bytes = encode_part(df, metadata).map_err(|source| TrackingError::WritePart {
            path: tmp.to_path_buf(),
            source,
        })?;
        let written = File::options()
            .write(true)
            .create_new(true)
            .open(tmp)
            .and_then(|mut file| {
                file.write_all(&bytes)?;
                if self.durable {
                    file.sync_all()?;
                }
                Ok(())
            })
            .map_err(|e| TrackingError::io(tmp, e));
        if written.is_err() {
            let _ = std::fs::remove_file(tmp);
        }
        written
    }

    /// The highest sequence number already on disk for (table, trial, attempt).
    fn max_seq(&self, table: Table, trial_id: &str, attempt: u32) -> Result<Option<u32>> {
        let listing = self.listing(table)?;
        Ok(listing
            .visible
            .iter()
            .chain(&listing.replaced)
            .filter_map(|p| parse_part_name(p))
            .filter(|(t, a, _)| *t == trial_id && *a == attempt)
            .map(|(_, _, s)| s)
            .max())
    }

    /// The visible part files of a table, sorted by name: every part that no compacted part
    /// replaces (see [`Store::compact`]).
    pub fn parts(&self, table: Table) -> Result<Vec<PathBuf>> {
        Ok(self.listing(table)?.visible)
    }

    fn listing(&self, table: Table) -> Result<Listing> {
        let dir = self.table_dir(table);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Listing::default()),
            Err(e) => return Err(TrackingError::io(&dir, e)),
        };
        let mut all = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| TrackingError::io(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with('.') && name.ends_with(".parquet") {
                all.push(entry.path());
            }
        }
        all.sort();
        let mut replaced = std::collections::HashSet::new();
        for p in all.iter().filter(|p| is_compacted(p)) {
            match replaced_by(p) {
                Ok(names) => replaced.extend(names),
                // Removed by a newer compaction since the listing: it replaced nothing new.
                Err(TrackingError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let (gone, visible) = all.into_iter().partition(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| replaced.contains(n))
        });
        Ok(Listing {
            visible,
            replaced: gone,
        })
    }

    /// Every row of a table, all attempts, in part order. The fixed columns of
    /// [`Table::schema`] are always present (also for an empty table); `trials` adds the union
    /// of the parts' `param.*` columns, null where a part lacks one.
    pub fn read(&self, table: Table) -> Result<DataFrame> {
        let base = table.schema();
        let mut tries = 0;
        loop {
            let parts = self.parts(table)?;
            let frames = read_parts(&parts, &base);
            match frames {
                Ok(frames) => return frame::concat_diagonal(frames, &base),
                // A compaction replaced and removed parts after the listing: list again.
                Err(TrackingError::Io { source, .. })
                    if source.kind() == ErrorKind::NotFound && tries < 3 =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Merges the parts of ended attempts into one compacted part per table, so that reading a
    /// large sweep opens a few files instead of thousands. Safe while a sweep runs: running
    /// attempts are left alone (no part is ever written for an attempt after its terminal
    /// event), the compacted part lists the parts it replaces in its metadata and is published
    /// atomically before they are removed, and readers skip replaced parts. A compaction killed
    /// half-way leaves a consistent store; the next one finishes the clean-up. One compaction at
    /// a time per store (a lock file; a stale lock of a dead process is taken over).
    pub fn compact(&self) -> Result<CompactReport> {
        let _lock = CompactLock::acquire(&self.root)?;
        let ended: std::collections::HashSet<(String, u32)> =
            TrialEvent::from_frame(&self.attempts()?)?
                .into_iter()
                .filter(|e| e.status.is_terminal())
                .map(|e| (e.trial_id, e.attempt))
                .collect();
        let mut report = CompactReport::default();
        for table in Table::ALL {
            let listing = self.listing(table)?;
            report.parts_before += listing.visible.len();
            let (merge, keep): (Vec<PathBuf>, Vec<PathBuf>) =
                listing.visible.into_iter().partition(|p| {
                    is_compacted(p)
                        || parse_part_name(p)
                            .is_some_and(|(t, a, _)| ended.contains(&(t.to_string(), a)))
                });
            report.parts_after += keep.len();
            if merge.len() <= 1 && listing.replaced.is_empty() {
                report.parts_after += merge.len();
                continue;
            }
            let base = table.schema();
            let frames = read_parts(&merge, &base)?;
            let mut df = frame::concat_diagonal(frames, &base)?;
            report.rows_compacted += df.height();
            let names: Vec<String> = merge
                .iter()
                .chain(&listing.replaced)
                .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
                .collect();
            let replaces = serde_json::to_string(&names).expect("strings serialize");
            let dir = self.table_dir(table);
            let name = format!(
                "{COMPACTED_PREFIX}{}-{}-{}.parquet",
                super::now_ms(),
                std::process::id(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let tmp = dir.join(temp_name(&name));
            self.write_temp(
                &tmp,
                &mut df,
                Some(vec![(REPLACES_KEY.to_string(), replaces)]),
            )?;
            let final_path = dir.join(&name);
            publish(&tmp, &final_path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                TrackingError::io(&final_path, e)
            })?;
            if self.durable {
                sync_dir(&dir)?;
            }
            report.parts_after += 1;
            for p in merge.iter().chain(&listing.replaced) {
                match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(TrackingError::io(p, e)),
                }
            }
        }
        Ok(report)
    }

    /// [`Store::read`] as a lazy frame, for queries.
    pub fn scan(&self, table: Table) -> Result<LazyFrame> {
        Ok(self.read(table)?.lazy())
    }

    /// The latest event of every trial attempt (all attempts, sorted by trial and attempt).
    pub fn attempts(&self) -> Result<DataFrame> {
        canonical::latest_events(self.read(Table::Trials)?)
    }

    /// The canonical view: chosen attempts and the rows that count (see the module doc).
    pub fn canonical(&self) -> Result<Canonical> {
        Canonical::from_tables(
            self.read(Table::Trials)?,
            self.read(Table::Epochs)?,
            self.read(Table::Results)?,
            self.read(Table::Timings)?,
        )
    }

    /// Only the chosen attempt of each trial (the `trials` part of [`Store::canonical`]), without
    /// reading the other tables.
    pub fn chosen_trials(&self) -> Result<DataFrame> {
        canonical::chosen(canonical::latest_events(self.read(Table::Trials)?)?)
    }

    /// Removes temporary files of writers that are gone: on this machine when their process no
    /// longer exists, from other machines once older than a day. Returns how many were removed.
    /// Run by [`Store::create`]; safe while other writers work (their files are kept).
    pub fn clean_temp_files(&self) -> Result<usize> {
        let host = host_tag();
        let me = std::process::id();
        let mut removed = 0;
        for t in Table::ALL {
            let dir = self.table_dir(t);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !name.starts_with(".tmp-") {
                    continue;
                }
                let stale = match parse_temp_name(name) {
                    Some((pid, file_host)) if file_host == host => pid != me && !process_alive(pid),
                    // Another machine's writer, or a name this version does not know.
                    _ => entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > FOREIGN_TEMP_MAX_AGE),
                };
                if stale && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                "removed {removed} temporary file(s) of interrupted writers in {}",
                self.root.display()
            );
        }
        Ok(removed)
    }
}

/// The parts of a table folder: those readers use, and those a compacted part replaces (still
/// on disk when a compaction was interrupted before removing them).
#[derive(Default)]
struct Listing {
    visible: Vec<PathBuf>,
    replaced: Vec<PathBuf>,
}

/// What [`Store::compact`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Visible parts of all tables before and after.
    pub parts_before: usize,
    pub parts_after: usize,
    /// Rows now in compacted parts.
    pub rows_compacted: usize,
}

/// Compacted parts are named `@compact-<ms>-<pid>-<n>.parquet` ('@' never starts a trial id).
const COMPACTED_PREFIX: &str = "@compact-";
/// The Parquet key-value metadata entry of a compacted part: a JSON list of the part names it
/// replaces.
const REPLACES_KEY: &str = "seglab.replaces";

fn is_compacted(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(COMPACTED_PREFIX))
}

/// The part names a compacted part replaces (read from its footer only).
fn replaced_by(path: &Path) -> Result<Vec<String>> {
    let file = File::open(path).map_err(|e| TrackingError::io(path, e))?;
    let bad = |message: String| TrackingError::ReadPart {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = ParquetReader::new(file);
    let meta = reader.get_metadata().map_err(|e| bad(e.to_string()))?;
    let value = meta
        .key_value_metadata
        .iter()
        .flatten()
        .find(|kv| kv.key == REPLACES_KEY)
        .and_then(|kv| kv.value.clone())
        .ok_or_else(|| {
            bad(format!(
                "a compacted part without its `{REPLACES_KEY}` list"
            ))
        })?;
    serde_json::from_str(&value).map_err(|e| bad(format!("`{REPLACES_KEY}`: {e}")))
}

/// (trial_id, attempt, seq) of a part name `<trial_id>-a<attempt>-<seq>.parquet`.
fn parse_part_name(path: &Path) -> Option<(&str, u32, u32)> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".parquet")?;
    let (rest, seq) = stem.rsplit_once('-')?;
    let (trial, attempt) = rest.rsplit_once("-a")?;
    Some((trial, attempt.parse().ok()?, seq.parse().ok()?))
}

/// The lock file of a running compaction; removed on drop.
struct CompactLock(PathBuf);

impl CompactLock {
    fn acquire(root: &Path) -> Result<CompactLock> {
        let path = root.join(".compact.lock");
        for _ in 0..2 {
            match File::options().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let _ = writeln!(f, "{} {}", std::process::id(), host_tag());
                    return Ok(CompactLock(path));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut it = owner.split_whitespace();
                    let pid = it.next().and_then(|p| p.parse::<u32>().ok());
                    let stale =
                        it.next() == Some(host_tag()) && pid.is_some_and(|p| !process_alive(p));
                    if !stale {
                        return Err(TrackingError::Query(format!(
                            "another compaction of {} is running (lock {}, owner {})",
                            root.display(),
                            path.display(),
                            owner.trim()
                        )));
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(TrackingError::io(&path, e)),
            }
        }
        Err(TrackingError::Query(format!(
            "cannot take the compaction lock {}",
            path.display()
        )))
    }
}

impl Drop for CompactLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads `parts` in order, on a few plain threads rather than rayon's pool: polars runs each
/// read on its own pool, and a rayon worker waiting for another pool steals further reads onto
/// its stack while it waits, so thousands of parts (a 1,000-trial sweep) overflowed the stack.
fn read_parts(parts: &[PathBuf], base: &Schema) -> Result<Vec<DataFrame>> {
    let threads = rayon::current_num_threads().clamp(1, parts.len().max(1));
    let chunk = parts.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = parts
            .chunks(chunk)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|p| read_part(p, base))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut frames = Vec::with_capacity(parts.len());
        for w in workers {
            frames.extend(w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?);
        }
        Ok(frames)
    })
}

fn read_part(path: &Path, base: &Schema) -> Result<DataFrame> {
    let file = File::open(path).map_err(|e| TrackingError::io(path, e))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| TrackingError::ReadPart {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    frame::conform(df, base, path)
}

/// Parts with fewer rows than this are plain-encoded (see [`encode_part`]): every part one
/// attempt writes in practice (a results part is volumes × classes × metrics rows, an epochs part
/// one row per epoch and metric). Compacted and bulk parts are bigger and keep dictionaries,
/// which make them about a fifth smaller (`benches/store.rs`: 8.1 MB instead of 10.0 MB for
/// 1 million result rows).
const DICTIONARY_MIN_ROWS: usize = 10_000;

/// Row groups of a part hold at most this many rows (polars' own default), so that a big
/// compacted part is still read in pieces.
const ROW_GROUP_ROWS: usize = 512 * 512;

/// Encodes `df` as a Parquet file in memory: Snappy pages, min/max/null statistics, the Arrow
/// schema and `metadata` in the footer, as polars' `ParquetWriter` writes them, but with the
/// column encodings chosen here. Polars asks for dictionary encoding of every string and
/// numeric column, and first estimates each such column's number of distinct values with a
/// 16,384-register HyperLogLog, even for a one-row part. A sweep writes thousands of small
/// parts (one trials part per status event, one results part per trial), and that estimate
/// plus the dictionary building are the largest cost of writing them (docs/design.md §2:
/// 1 million metric rows written and aggregated in under 2 s). Parts below
/// [`DICTIONARY_MIN_ROWS`] rows are therefore plain-encoded: Snappy still shrinks their
/// repeated ids and names. Readers see the same columns and types either way: the encoding is
/// a property of each column chunk that every Parquet reader handles, so dictionary-encoded
/// parts (polars' own `ParquetWriter`) read the same.
fn encode_part(
    df: &mut DataFrame,
    metadata: Option<Vec<(String, String)>>,
) -> PolarsResult<Vec<u8>> {
    let plain = df.height() < DICTIONARY_MIN_ROWS;
    let chunked = polars::frame::chunk_df_for_writing(df, ROW_GROUP_ROWS)?;
    let schema = chunked.schema().to_arrow(CompatLevel::newest());
    let encodings: Vec<Vec<Encoding>> = schema
        .iter_values()
        .map(|field| {
            let mut e = get_dtype_encoding(&field.dtype);
            if plain {
                e.fill(Encoding::Plain);
            }
            e
        })
        .collect();
    let options = WriteOptions {
        statistics: StatisticsOptions::default(),
        compression: CompressionOptions::Snappy,
        version: Version::V1,
        data_page_size: None,
    };
    let mut bytes = Vec::with_capacity(16 * 1024);
    let mut writer = FileWriter::try_new(&mut bytes, schema.clone(), options)?;
    let fields = writer.parquet_schema().fields().to_vec();
    for batch in chunked.iter_chunks(CompatLevel::newest(), false) {
        if batch.is_empty() {
            continue;
        }
        let rows = batch.len() as u64;
        let columns = row_group_iter(batch, encodings.clone().into(), fields.clone(), options);
        writer.write(rows, columns)?;
    }
    // The footer holds the Arrow schema (so readers get back the exact polars types) followed
    // by the store's own entries.
    let footer = metadata.map(|kv| {
        std::iter::once(schema_to_metadata_key(&schema))
            .chain(kv.into_iter().map(|(key, value)| KeyValue {
                key,
                value: Some(value),
            }))
            .collect()
    });
    writer.end(footer)?;
    Ok(bytes)
}

/// Claims `final_path` for the finished temporary file without ever replacing an existing part:
/// an atomic no-replace rename where the kernel and filesystem offer it (Linux `renameat2`),
/// else a hard link (fails if the name exists) followed by removing the temporary name.
fn publish(tmp: &Path, final_path: &Path) -> std::io::Result<()> {
    match rename_noreplace(tmp, final_path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {} // not supported here: fall back
    }
    match std::fs::hard_link(tmp, final_path) {
        Ok(()) => {
            let _ = std::fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(e),
        // Filesystems without hard links: a checked rename (a race of two writers on the same
        // attempt is then possible, but each attempt has one writer).
        Err(_) if !final_path.exists() => std::fs::rename(tmp, final_path),
        Err(_) => Err(std::io::Error::from(ErrorKind::AlreadyExists)),
    }
}

#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(_from: &Path, _to: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(ErrorKind::Unsupported))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TrackingError::io(dir, e))
}

fn part_name(trial_id: &str, attempt: u32, seq: u32) -> String {
    format!("{trial_id}-a{attempt}-{seq:06}.parquet")
}

/// `.tmp-<pid>-<counter>-<host tag>-<final name>`: the pid and host let a later writer tell
/// an abandoned file from one being written.
fn temp_name(final_name: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        ".tmp-{}-{n}-{}-{final_name}",
        std::process::id(),
        host_tag()
    )
}

fn parse_temp_name(name: &str) -> Option<(u32, &str)> {
    let mut it = name.strip_prefix(".tmp-")?.splitn(4, '-');
    let pid = it.next()?.parse().ok()?;
    let _counter: u64 = it.next()?.parse().ok()?;
    let host = it.next()?;
    Some((pid, host))
}

/// 16 hex digits identifying this machine (a hash of its host name; names may hold `-`).
fn host_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(hostname().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// The machine's host name (empty when unknown).
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Trial ids become file names: a short run of letters, digits, `_`, `-` and `.`.
fn validate_trial_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(TrackingError::InvalidName {
            what: "trial id",
            value: id.to_string(),
            expected: "1 to 128 letters, digits, '_', '-' or '.', not starting with '.'",
        })
    }
}

/// Groups items by (trial, attempt), keeping the order of first appearance and of items.
fn group_by_attempt<'a, T>(
    items: &'a [T],
    key: impl Fn(&'a T) -> (&'a str, u32),
) -> Vec<Vec<&'a T>> {
    let mut index: HashMap<(&str, u32), usize> = HashMap::new();
    let mut groups: Vec<Vec<&T>> = Vec::new();
    for item in items {
        let k = key(item);
        let i = *index.entry(k).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(item);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_parse_back_and_are_hidden() {
        let name = temp_name("ab-c-a2-000003.parquet");
        assert!(name.starts_with(".tmp-"));
        let (pid, host) = parse_temp_name(&name).unwrap();
        assert_eq!(pid, std::process::id());
        assert_eq!(host, host_tag());
        assert_eq!(parse_temp_name("trial-a1-000000.parquet"), None);
        assert_eq!(parse_temp_name(".tmp-x-1-h-n"), None);
    }

    #[test]
    fn trial_ids_must_be_file_name_safe() {
        assert!(validate_trial_id("unet3d-f0-s1.3fa9").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(129)] {
            assert!(validate_trial_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn grouping_keeps_first_appearance_order() {
        let items = [("b", 1), ("a", 1), ("b", 1), ("b", 2)];
        let groups = group_by_attempt(&items, |x| (x.0, x.1));
        let keys: Vec<_> = groups.iter().map(|g| (g[0].0, g[0].1, g.len())).collect();
        assert_eq!(keys, [("b", 1, 2), ("a", 1, 1), ("b", 2, 1)]);
    }

    #[test]
    fn cleaning_removes_only_temp_files_of_dead_writers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let epochs = store.table_dir(Table::Epochs);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let tag = host_tag();
        let dead_file = epochs.join(format!(".tmp-{dead}-0-{tag}-t-a1-000000.parquet"));
        let own_file = epochs.join(format!(
            ".tmp-{}-0-{tag}-t-a1-000001.parquet",
            std::process::id()
        ));
        let foreign = epochs.join(".tmp-1-0-0000000000000000-t-a1-000002.parquet");
        let unknown = epochs.join(".tmp-junk");
        for f in [&dead_file, &own_file, &foreign, &unknown] {
            std::fs::write(f, b"half a part").unwrap();
        }
        assert_eq!(store.clean_temp_files().unwrap(), 1);
        assert!(!dead_file.exists());
        assert!(own_file.exists() && foreign.exists() && unknown.exists());
        // Readers never see them.
        assert_eq!(store.read(Table::Epochs).unwrap().height(), 0);
    }

    fn results(trial: &str, n: usize) -> Vec<ResultRow> {
        (0..n)
            .map(|i| ResultRow {
                trial_id: trial.into(),
                attempt: 1,
                volume: format!("vol{:02}", i % 5),
                class: ["golgi", "nuclei"][i % 2].into(),
                metric: format!("m{:03}", i % 100),
                value: if i == 3 { f64::NAN } else { i as f64 / 7.0 },
            })
            .collect()
    }

    /// Per column chunk of the first row group: (column name, has a dictionary page, codec).
    fn chunk_encodings(bytes: Vec<u8>) -> Vec<(String, bool, String)> {
        let mut reader = ParquetReader::new(std::io::Cursor::new(bytes));
        let meta = reader.get_metadata().unwrap().clone();
        meta.row_groups[0]
            .parquet_columns()
            .iter()
            .map(|c| {
                (
                    c.descriptor().path_in_schema[0].to_string(),
                    c.dictionary_page_offset().is_some(),
                    format!("{:?}", c.compression()),
                )
            })
            .collect()
    }

    #[test]
    fn small_parts_are_plain_and_big_parts_keep_dictionaries() {
        let mut small = ResultRow::to_frame(&results("t", 1000)).unwrap();
        for (name, dict, codec) in chunk_encodings(encode_part(&mut small, None).unwrap()) {
            assert!(!dict, "column {name} of a small part has a dictionary");
            assert_eq!(codec, "Snappy", "column {name}");
        }
        let mut big = ResultRow::to_frame(&results("t", DICTIONARY_MIN_ROWS)).unwrap();
        let encodings = chunk_encodings(encode_part(&mut big, None).unwrap());
        for column in ["trial_id", "volume", "class", "metric"] {
            let (_, dict, codec) = encodings.iter().find(|e| e.0 == column).unwrap();
            assert!(
                dict,
                "string column {column} of a big part lost its dictionary"
            );
            assert_eq!(codec, "Snappy");
        }
    }

    #[test]
    fn encoded_parts_read_back_with_types_values_and_metadata() {
        let rows = results("t", 50);
        let mut df = ResultRow::to_frame(&rows).unwrap();
        let kv = vec![("seglab.test".to_string(), "[\"a\"]".to_string())];
        let bytes = encode_part(&mut df, Some(kv)).unwrap();
        let mut reader = ParquetReader::new(std::io::Cursor::new(bytes));
        let meta = reader.get_metadata().unwrap().clone();
        let keys: Vec<_> = meta
            .key_value_metadata
            .iter()
            .flatten()
            .map(|kv| (kv.key.as_str(), kv.value.as_deref()))
            .collect();
        assert_eq!(
            keys[0].0, "ARROW:schema",
            "the Arrow schema leads the footer"
        );
        assert!(keys.contains(&("seglab.test", Some("[\"a\"]"))));
        let back = reader.finish().unwrap();
        assert_eq!(back.schema(), df.schema());
        // Debug strings compare NaN equal to NaN.
        let key = |r: &ResultRow| format!("{r:?}");
        let back = ResultRow::from_frame(&back).unwrap();
        assert_eq!(
            back.iter().map(key).collect::<Vec<_>>(),
            rows.iter().map(key).collect::<Vec<_>>()
        );
        assert!(back[3].value.is_nan());
    }

    #[test]
    fn parts_written_by_polars_own_writer_read_as_before() {
        // Parts written by polars' `ParquetWriter` are dictionary-encoded throughout.
        use polars_io::parquet::write::{ParquetCompression, ParquetWriter};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap().with_durable(false);
        let old_rows = results("old", 1200);
        let mut old = ResultRow::to_frame(&old_rows).unwrap();
        let file = File::create(
            store
                .table_dir(Table::Results)
                .join("old-a1-000000.parquet"),
        );
        ParquetWriter::new(file.unwrap())
            .with_compression(ParquetCompression::Snappy)
            .finish(&mut old)
            .unwrap();
        let new_rows = results("new", 1200);
        store.write_results(&new_rows).unwrap();
        let back = ResultRow::from_frame(&store.read(Table::Results).unwrap()).unwrap();
        let key = |r: &ResultRow| format!("{r:?}");
        let expected: Vec<String> = new_rows.iter().chain(&old_rows).map(key).collect();
        assert_eq!(back.iter().map(key).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn own_process_is_alive_and_a_reaped_child_is_not() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
