//! The `[search]` table of a sweep spec: which points of a configuration space each `[[grid]]`
//! block runs besides its Cartesian product.
//!
//! ```toml
//! [search]
//! kind = "sobol"                 # grid (default) | random | sobol
//! n = 16                         # draws per grid cell
//! seed = 0                       # default 0
//! [search.space]
//! "train.optimizer.lr" = { log-uniform = [1e-4, 1e-2] }
//! "loss.golgi_weight" = { uniform = [1, 6] }
//! "data.patches.count" = { int = [16, 64] }
//! "loss.mode" = { choice = ["global", "per-class"] }
//! ```
//!
//! [`SearchSpec::draws`] gives `n` points, each a value per space key. They depend only on
//! the kind, `n`, `seed` and the space (its keys in sorted order), so a re-run of the spec
//! plans the same trials with the same ids. Every cell of every grid block gets the same
//! points, which pairs comparisons between models and grid values. Changing `n` keeps the
//! points of the smaller `n` (both kinds are sequences), so raising it only adds trials;
//! adding or removing a space key changes every point.
//!
//! - `random`: independent uniform draws from a seeded splitmix64 stream (a fixed algorithm,
//!   so the points never change with a library version);
//! - `sobol`: the first `n` points of the Sobol sequence ([`super::sobol`]), digitally
//!   shifted by a seeded random mask per dimension (a shift keeps the sequence's balance
//!   and moves its first point off the lower corner of the space).
//!
//! Drawn real values are rounded to 6 significant digits: readable in `sweep plan`, and the
//! same on every platform (the last bits of `exp`/`ln` may differ between libms).

use std::collections::BTreeMap;

use serde_json::Value;

use super::sobol::{MAX_DIMENSIONS, Sobol};
use super::spec::toml_to_json;

/// How the points of `[search.space]` are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchKind {
    Random,
    Sobol,
}

impl SearchKind {
    pub fn name(self) -> &'static str {
        match self {
            SearchKind::Random => "random",
            SearchKind::Sobol => "sobol",
        }
    }
}

/// The distribution of one key of `[search.space]`.
#[derive(Clone, Debug, PartialEq)]
pub enum Distribution {
    /// Uniform in log space between two positive bounds.
    LogUniform(f64, f64),
    Uniform(f64, f64),
    /// An integer in `[a, b]`, both included, each equally likely.
    Int(i64, i64),
    /// One of the listed values, each equally likely.
    Choice(Vec<Value>),
}

const DISTRIBUTIONS: [&str; 4] = ["log-uniform", "uniform", "int", "choice"];

impl Distribution {
    /// The value at `u` ∈ [0, 1).
    fn at(&self, u: f64) -> Value {
        match self {
            Distribution::LogUniform(a, b) => rounded((a.ln() + u * (b.ln() - a.ln())).exp()),
            Distribution::Uniform(a, b) => rounded(a + u * (b - a)),
            Distribution::Int(a, b) => {
                let span = (b - a + 1) as f64;
                Value::from((*a + (u * span).floor() as i64).min(*b))
            }
            Distribution::Choice(items) => {
                let i = ((u * items.len() as f64).floor() as usize).min(items.len() - 1);
                items[i].clone()
            }
        }
    }
}

/// `x` rounded to 6 significant digits, as JSON (module doc).
fn rounded(x: f64) -> Value {
    let r: f64 = format!("{x:.5e}").parse().unwrap_or(x);
    serde_json::Number::from_f64(r).map_or(Value::Null, Value::Number)
}

/// A parsed `[search]` table of kind random or sobol (kind grid is no search: `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSpec {
    pub kind: SearchKind,
    /// Points per grid cell.
    pub n: usize,
    pub seed: u64,
    /// Dotted config keys and their distributions, in key order.
    pub space: Vec<(String, Distribution)>,
}

impl SearchSpec {
    /// Parses the `[search]` table; `Ok(None)` for kind grid. Errors name the key (below
    /// `search.`) and what was expected.
    pub fn parse(table: &toml::Table) -> Result<Option<SearchSpec>, String> {
        for key in table.keys() {
            if !["kind", "n", "seed", "space"].contains(&key.as_str()) {
                let hint = crate::keys::nearest(key, &["kind", "n", "seed", "space"])
                    .map(|n| format!(", did you mean `{n}`?"))
                    .unwrap_or_default();
                return Err(format!("unknown key `search.{key}`{hint}"));
            }
        }
        let kind = match table.get("kind") {
            None => "grid",
            Some(toml::Value::String(s)) => s.as_str(),
            Some(v) => return Err(format!("search.kind: expected a string, got {v}")),
        };
        let kind = match kind {
            "grid" => {
                if let Some(k) = ["n", "seed", "space"]
                    .iter()
                    .find(|k| table.contains_key(**k))
                {
                    return Err(format!(
                        "search.{k}: kind \"grid\" draws nothing; set kind = \"random\" or \
                         \"sobol\", or list values in [[grid]] blocks"
                    ));
                }
                return Ok(None);
            }
            "random" => SearchKind::Random,
            "sobol" => SearchKind::Sobol,
            other => {
                let hint = crate::keys::nearest(other, &["grid", "random", "sobol"])
                    .map(|n| format!(", did you mean {n:?}?"))
                    .unwrap_or_default();
                return Err(format!(
                    "search.kind: expected \"grid\", \"random\" or \"sobol\", got {other:?}{hint}"
                ));
            }
        };
        let n = match table.get("n") {
            Some(toml::Value::Integer(n)) if *n >= 1 => *n as usize,
            Some(v) => return Err(format!("search.n: expected a number of draws ≥ 1, got {v}")),
            None => {
                return Err(format!(
                    "search.n: kind {:?} needs `n = <draws>`",
                    kind.name()
                ));
            }
        };
        let seed = match table.get("seed") {
            None => 0,
            Some(toml::Value::Integer(s)) if *s >= 0 => *s as u64,
            Some(v) => return Err(format!("search.seed: expected an integer ≥ 0, got {v}")),
        };
        let space = match table.get("space") {
            Some(toml::Value::Table(t)) => parse_space(t)?,
            Some(v) => return Err(format!("search.space: expected a table, got {v}")),
            None => Vec::new(),
        };
        if space.is_empty() {
            return Err(format!(
                "search.space: kind {:?} needs at least one key, e.g. \
                 \"train.optimizer.lr\" = {{ log-uniform = [1e-4, 1e-2] }}",
                kind.name()
            ));
        }
        if kind == SearchKind::Sobol && space.len() > MAX_DIMENSIONS {
            return Err(format!(
                "search.space: kind \"sobol\" takes at most {MAX_DIMENSIONS} keys, got {}",
                space.len()
            ));
        }
        Ok(Some(SearchSpec {
            kind,
            n,
            seed,
            space,
        }))
    }

    /// The `n` points: per point, each space key with its value (module doc).
    pub fn draws(&self) -> Vec<Vec<(String, Value)>> {
        let dims = self.space.len();
        let units: Vec<Vec<f64>> = match self.kind {
            SearchKind::Random => {
                let mut rng = SplitMix64(self.seed);
                (0..self.n)
                    .map(|_| (0..dims).map(|_| rng.unit()).collect())
                    .collect()
            }
            SearchKind::Sobol => {
                let mut shift = SplitMix64(self.seed);
                let masks: Vec<u32> = (0..dims).map(|_| (shift.next() >> 32) as u32).collect();
                let sobol = Sobol::new(dims);
                (0..self.n as u64)
                    .map(|i| sobol.point_shifted(i, &masks))
                    .collect()
            }
        };
        units
            .iter()
            .map(|u| {
                self.space
                    .iter()
                    .zip(u)
                    .map(|((key, dist), &x)| (key.clone(), dist.at(x)))
                    .collect()
            })
            .collect()
    }
}

/// The keys of `[search.space]` (nested tables flattened into dotted keys, as in `[set]`).
fn parse_space(table: &toml::Table) -> Result<Vec<(String, Distribution)>, String> {
    let mut out = BTreeMap::new();
    for (key, v) in super::spec::flatten_where(table, "", &is_key_path) {
        if !key.contains('.') {
            return Err(format!(
                "search.space: `{key}` is not a dotted config key such as \
                 \"train.optimizer.lr\""
            ));
        }
        let d = parse_distribution(&v).map_err(|m| format!("search.space.\"{key}\": {m}"))?;
        out.insert(key, d);
    }
    Ok(out.into_iter().collect())
}

/// A table that only holds tables continues a dotted key (`train = { optimizer = { lr = …`);
/// any other table is a distribution (`{ uniform = [1, 6] }`, or a misspelled one).
fn is_key_path(t: &toml::Table) -> bool {
    !t.is_empty() && t.values().all(toml::Value::is_table)
}

const EXPECTED: &str = "expected { log-uniform = [a, b] }, { uniform = [a, b] }, \
                        { int = [a, b] } or { choice = [...] }";

fn parse_distribution(value: &toml::Value) -> Result<Distribution, String> {
    let toml::Value::Table(t) = value else {
        return Err(format!("{EXPECTED}, got {value}"));
    };
    let (name, arg) = t.iter().next().ok_or_else(|| EXPECTED.to_string())?;
    if t.len() != 1 {
        return Err(format!("{EXPECTED}, got {value}"));
    }
    match name.as_str() {
        "log-uniform" => {
            let (a, b) = bounds(arg, name)?;
            if a <= 0.0 {
                return Err(format!(
                    "log-uniform: the bounds must be > 0, got [{a}, {b}]"
                ));
            }
            Ok(Distribution::LogUniform(a, b))
        }
        "uniform" => {
            let (a, b) = bounds(arg, name)?;
            Ok(Distribution::Uniform(a, b))
        }
        "int" => {
            let pair = match arg {
                toml::Value::Array(a) if a.len() == 2 => (a[0].as_integer(), a[1].as_integer()),
                _ => (None, None),
            };
            match pair {
                (Some(a), Some(b)) if a <= b => Ok(Distribution::Int(a, b)),
                (Some(a), Some(b)) => Err(format!("int: expected a ≤ b, got [{a}, {b}]")),
                _ => Err(format!("int: expected [a, b] with two integers, got {arg}")),
            }
        }
        "choice" => match arg {
            toml::Value::Array(items) if !items.is_empty() => Ok(Distribution::Choice(
                items
                    .iter()
                    .map(toml_to_json)
                    .collect::<Result<_, _>>()
                    .map_err(|m| format!("choice{m}"))?,
            )),
            _ => Err(format!(
                "choice: expected a non-empty list of values, got {arg}"
            )),
        },
        other => {
            let hint = crate::keys::nearest(other, &DISTRIBUTIONS)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            Err(format!("unknown distribution `{other}`{hint}: {EXPECTED}"))
        }
    }
}

/// `[a, b]` with two numbers, a < b.
fn bounds(arg: &toml::Value, name: &str) -> Result<(f64, f64), String> {
    let number = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    let pair = match arg {
        toml::Value::Array(a) if a.len() == 2 => (number(&a[0]), number(&a[1])),
        _ => (None, None),
    };
    match pair {
        (Some(a), Some(b)) if a.is_finite() && b.is_finite() && a < b => Ok((a, b)),
        (Some(a), Some(b)) => Err(format!("{name}: expected finite a < b, got [{a}, {b}]")),
        _ => Err(format!(
            "{name}: expected [a, b] with two numbers, got {arg}"
        )),
    }
}

/// splitmix64 (Steele, Lea and Flood 2014): a tiny, fixed, well-mixed 64-bit stream.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in [0, 1) with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Option<SearchSpec>, String> {
        let table: toml::Table = text.parse().unwrap();
        SearchSpec::parse(table["search"].as_table().unwrap())
    }

    const SPACE: &str = r#"
[search.space]
"train.optimizer.lr" = { log-uniform = [1e-4, 1e-2] }
"loss.golgi_weight" = { uniform = [1, 6] }
"data.patches.count" = { int = [16, 64] }
"loss.mode" = { choice = ["global", "per-class"] }
"#;

    fn spec(kind: &str, n: usize, seed: u64) -> SearchSpec {
        parse(&format!(
            "[search]\nkind = \"{kind}\"\nn = {n}\nseed = {seed}\n{SPACE}"
        ))
        .unwrap()
        .unwrap()
    }

    #[test]
    fn draws_stay_inside_their_distributions() {
        for kind in ["random", "sobol"] {
            let s = spec(kind, 64, 3);
            let draws = s.draws();
            assert_eq!(draws.len(), 64);
            for d in &draws {
                let v: BTreeMap<&str, &Value> = d.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let lr = v["train.optimizer.lr"].as_f64().unwrap();
                assert!((1e-4..=1e-2).contains(&lr), "{kind}: lr {lr}");
                let w = v["loss.golgi_weight"].as_f64().unwrap();
                assert!((1.0..=6.0).contains(&w), "{kind}: weight {w}");
                let c = v["data.patches.count"].as_i64().unwrap();
                assert!((16..=64).contains(&c), "{kind}: count {c}");
                assert!(["global", "per-class"].contains(&v["loss.mode"].as_str().unwrap()));
            }
            // Log-uniform: about half the draws below the geometric midpoint 1e-3.
            let below = draws
                .iter()
                .filter(|d| d[3].1.as_f64().unwrap() < 1e-3)
                .count();
            assert!(
                (16..=48).contains(&below),
                "{kind}: {below} of 64 below 1e-3"
            );
            // Both choices and both ends of the integer range are reached.
            for wanted in [json!("global"), json!("per-class")] {
                assert!(draws.iter().any(|d| d[2].1 == wanted), "{kind}: {wanted}");
            }
        }
    }

    #[test]
    fn draws_are_a_function_of_kind_n_seed_and_space() {
        for kind in ["random", "sobol"] {
            assert_eq!(spec(kind, 8, 1).draws(), spec(kind, 8, 1).draws());
            assert_ne!(spec(kind, 8, 1).draws(), spec(kind, 8, 2).draws());
            // A larger n extends the same sequence.
            assert_eq!(spec(kind, 12, 1).draws()[..8], spec(kind, 8, 1).draws()[..]);
        }
        assert_ne!(spec("random", 8, 1).draws(), spec("sobol", 8, 1).draws());
    }

    #[test]
    fn sobol_draws_cover_each_key_evenly() {
        // 16 Sobol points put exactly 4 in each quarter of every uniform key; 16 random ones
        // rarely do, which is the point of a quasi-random design.
        let s = spec("sobol", 16, 7);
        let draws = s.draws();
        let weights: Vec<f64> = draws.iter().map(|d| d[1].1.as_f64().unwrap()).collect();
        for q in 0..4 {
            let (lo, hi) = (1.0 + 1.25 * q as f64, 1.0 + 1.25 * (q + 1) as f64);
            let inside = weights.iter().filter(|w| (lo..hi).contains(*w)).count();
            assert_eq!(inside, 4, "quarter {q}: {weights:?}");
        }
    }

    #[test]
    fn real_values_are_rounded_to_six_significant_digits() {
        assert_eq!(rounded(0.000_123_456_789), json!(0.000123457));
        assert_eq!(rounded(3.0), json!(3.0));
        assert_eq!(Distribution::Int(1, 3).at(0.999_999), json!(3));
        assert_eq!(Distribution::Int(1, 3).at(0.0), json!(1));
    }

    #[test]
    fn grid_is_no_search_and_bad_tables_name_key_and_expectation() {
        assert_eq!(parse("[search]\nkind = \"grid\"\n").unwrap(), None);
        assert_eq!(parse("[search]\n").unwrap(), None);
        let cases = [
            (
                "[search]\nkind = \"sobl\"\nn = 2\n",
                "search.kind: expected \"grid\", \"random\" or \"sobol\", got \"sobl\", did you mean \"sobol\"?",
            ),
            (
                "[search]\nkind = \"random\"\n",
                "search.n: kind \"random\" needs `n = <draws>`",
            ),
            (
                "[search]\nkind = \"random\"\nn = 0\n",
                "search.n: expected a number of draws ≥ 1, got 0",
            ),
            (
                "[search]\nkind = \"random\"\nn = 2\n",
                "search.space: kind \"random\" needs at least one key",
            ),
            (
                "[search]\nkind = \"grid\"\nn = 2\n",
                "search.n: kind \"grid\" draws nothing",
            ),
            (
                "[search]\nkind = \"random\"\nn = 2\nseeds = 1\n",
                "unknown key `search.seeds`, did you mean `seed`?",
            ),
            (
                "[search]\nkind = \"random\"\nn = 2\n[search.space]\n\"a.b\" = { uniform = [2, 1] }\n",
                "search.space.\"a.b\": uniform: expected finite a < b, got [2, 1]",
            ),
            (
                "[search]\nkind = \"random\"\nn = 2\n[search.space]\n\"a.b\" = { log-uniform = [0, 1] }\n",
                "log-uniform: the bounds must be > 0",
            ),
            (
                "[search]\nkind = \"random\"\nn = 2\n[search.space]\n\"a.b\" = { int = [1.5, 3] }\n",
                "search.space.\"a.b\": int: expected [a, b] with two integers, got [1.5, 3]",
            ),
            (
                "[search]\nkind = \"random\"\nn = 2\n[search.space]\n\"a.b\" = { choice = [] }\n",
                "choice: expected a non-empty list",
            ),
            (
                "[search]\nkind = \"random\"\nn = 2\n[search.space]\n\"a.b\" = [1, 2]\n",
                "search.space.\"a.b\": expected { log-uniform = [a, b] }",
            ),
            (
                "[search]\nkind = \"random\"\nn = 2\n[search.space]\n\"a.b\" = { unifrom = [1, 2] }\n",
                "unknown distribution `unifrom` (did you mean `uniform`?)",
            ),
            (
                "[search]\nkind = \"random\"\nn = 2\n[search.space]\nlr = { uniform = [1, 2] }\n",
                "`lr` is not a dotted config key",
            ),
        ];
        for (text, wanted) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(wanted), "{text}\n→ {e}\nwanted {wanted}");
        }
        let many: String = (0..=MAX_DIMENSIONS)
            .map(|i| format!("\"k.k{i}\" = {{ uniform = [0, 1] }}\n"))
            .collect();
        let e = parse(&format!(
            "[search]\nkind = \"sobol\"\nn = 2\n[search.space]\n{many}"
        ))
        .unwrap_err();
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn nested_space_tables_flatten_into_dotted_keys() {
        let s = parse(
            "[search]\nkind = \"random\"\nn = 1\n[search.space]\ntrain.optimizer.lr = { uniform = [0.1, 0.2] }\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.space[0].0, "train.optimizer.lr");
    }
}
