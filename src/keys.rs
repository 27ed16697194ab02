//! Reading TOML configuration files with errors a user can act on: an unknown key is reported
//! with its full path (`volumes[2].mask_file`), its line and column, and the nearest valid key
//! by edit distance; syntax and type errors are reported on one line with their position.
//!
//! serde's `deny_unknown_fields` alone reports "unknown field" without a path or a suggestion,
//! so [`parse_toml`] first walks the document against a [`KeySchema`] (the field lists come
//! from the serde derives themselves, see [`struct_fields`]) and only then deserializes.
//! Used by `dataset.toml` and by every other TOML file seglab reads (docs/design.md §1). This module knows nothing about
//! files: callers prefix the file name.

use serde::de::{self, DeserializeOwned, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A TOML problem with its position; `Display` gives one line `line:col: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct TomlError {
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    pub message: String,
}

/// The keys a TOML table may hold, and the schemas of its sub-tables (tables and arrays of
/// tables).
#[derive(Clone, Debug)]
pub struct KeySchema {
    fields: &'static [&'static str],
    children: Vec<(&'static str, KeySchema)>,
}

impl KeySchema {
    /// The schema of a serde-derived struct: its field names, no sub-tables yet.
    pub fn of<T: DeserializeOwned>() -> Self {
        Self {
            fields: struct_fields::<T>(),
            children: Vec::new(),
        }
    }

    /// Declares that field `name` is a table (or an array of tables) following `schema`.
    pub fn child(mut self, name: &'static str, schema: KeySchema) -> Self {
        self.children.push((name, schema));
        self
    }

    /// The valid keys at this level.
    pub fn fields(&self) -> &'static [&'static str] {
        self.fields
    }

    fn child_schema(&self, name: &str) -> Option<&KeySchema> {
        self.children
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
    }
}

/// Parses `text` into `T`, first rejecting unknown keys (path, position, nearest valid key),
/// then deserializing (type errors with their position).
pub fn parse_toml<T: DeserializeOwned>(text: &str, schema: &KeySchema) -> Result<T, TomlError> {
    let doc = DeTable::parse(text).map_err(|e| toml_error(text, &e))?;
    check_table(text, doc.get_ref(), "", schema)?;
    toml::from_str(text).map_err(|e| toml_error(text, &e))
}

fn toml_error(text: &str, err: &toml::de::Error) -> TomlError {
    let (line, column) = err
        .span()
        .map(|s| line_col(text, s.start))
        .unwrap_or((1, 1));
    TomlError {
        line,
        column,
        message: err.message().trim().replace('\n', " "),
    }
}

fn check_table(
    text: &str,
    table: &DeTable<'_>,
    path: &str,
    schema: &KeySchema,
) -> Result<(), TomlError> {
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        let full = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
        if !schema.fields.contains(&name) {
            let (line, column) = line_col(text, key.span().start);
            let hint = match nearest(name, schema.fields) {
                Some(n) => format!(", did you mean `{n}`?"),
                None => String::new(),
            };
            return Err(TomlError {
                line,
                column,
                message: format!("unknown key `{full}`{hint}"),
            });
        }
        if let Some(child) = schema.child_schema(name) {
            check_value(text, value, &full, child)?;
        }
    }
    Ok(())
}

fn check_value(
    text: &str,
    value: &Spanned<DeValue<'_>>,
    path: &str,
    schema: &KeySchema,
) -> Result<(), TomlError> {
    match value.get_ref() {
        DeValue::Table(t) => check_table(text, t, path, schema),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_value(text, item, &format!("{path}[{i}]"), schema)?;
            }
            Ok(())
        }
        // A scalar where a table belongs is a type error; deserialization reports it.
        _ => Ok(()),
    }
}

/// 1-based (line, column) of byte offset `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let before = &text[..pos.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The candidate closest to `key` by edit distance (ties: the first listed), or `None` when
/// there are no candidates.
pub fn nearest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .copied()
        .min_by_key(|c| edit_distance(key, c))
}

/// Levenshtein distance (insertions, deletions, substitutions) between two strings, by
/// characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The field names a serde-derived struct accepts, read from its `Deserialize` impl (which
/// passes them to `deserialize_struct`), so the list can never drift from the struct.
///
/// Returns an empty list for types that are not plain structs.
pub fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldProbe {
        fields: &mut fields,
    });
    fields
}

/// A deserializer that records the field list of `deserialize_struct` and then gives up.
struct FieldProbe<'a> {
    fields: &'a mut &'static [&'static str],
}

#[derive(Debug)]
struct ProbeDone;

impl std::fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for ProbeDone {}

impl de::Error for ProbeDone {
    fn custom<M: std::fmt::Display>(_msg: M) -> Self {
        ProbeDone
    }
}

impl<'de> de::Deserializer<'de> for FieldProbe<'_> {
    type Error = ProbeDone;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ProbeDone> {
        Err(ProbeDone)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, ProbeDone> {
        *self.fields = fields;
        Err(ProbeDone)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        id: String,
        #[serde(default)]
        mask: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        items: Vec<Inner>,
        #[serde(default)]
        sub: Option<Inner>,
    }

    fn schema() -> KeySchema {
        KeySchema::of::<Outer>()
            .child("items", KeySchema::of::<Inner>())
            .child("sub", KeySchema::of::<Inner>())
    }

    #[test]
    fn field_lists_come_from_the_derive() {
        assert_eq!(struct_fields::<Inner>(), &["id", "mask"]);
        assert_eq!(struct_fields::<Outer>(), &["name", "items", "sub"]);
        assert!(struct_fields::<u32>().is_empty());
    }

    #[test]
    fn edit_distance_and_nearest() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("mask", "mask"), 0);
        assert_eq!(nearest("mask_file", &["id", "image", "mask"]), Some("mask"));
        assert_eq!(nearest("x", &[]), None);
    }

    #[test]
    fn unknown_key_in_array_of_tables_names_path_position_and_nearest() {
        let text = "name = \"a\"\n[[items]]\nid = \"v1\"\n[[items]]\nid = \"v2\"\nmsak = \"m\"\n";
        let err = parse_toml::<Outer>(text, &schema()).unwrap_err();
        assert_eq!((err.line, err.column), (6, 1));
        assert_eq!(
            err.message,
            "unknown key `items[1].msak`, did you mean `mask`?"
        );
        assert_eq!(
            err.to_string(),
            "6:1: unknown key `items[1].msak`, did you mean `mask`?"
        );
    }

    #[test]
    fn unknown_key_at_top_level_and_in_a_sub_table() {
        let err = parse_toml::<Outer>("nam = \"a\"\n", &schema()).unwrap_err();
        assert!(err.message.contains("`nam`, did you mean `name`"), "{err}");
        let err = parse_toml::<Outer>("name = \"a\"\nsub = { id = \"x\", ids = 1 }\n", &schema())
            .unwrap_err();
        assert!(
            err.message.contains("`sub.ids`, did you mean `id`"),
            "{err}"
        );
        assert_eq!(err.line, 2);
    }

    #[test]
    fn type_and_syntax_errors_are_one_line_with_position() {
        let err = parse_toml::<Outer>("name = 3\n", &schema()).unwrap_err();
        assert_eq!(err.line, 1);
        assert!(!err.to_string().contains('\n'), "{err}");
        assert!(err.message.contains("string"), "{err}");
        let err = parse_toml::<Outer>("name = \"a\"\nitems = [\n", &schema()).unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn valid_document_parses() {
        let v: Outer = parse_toml(
            "name = \"a\"\n[[items]]\nid = \"v1\"\nmask = \"m\"\n",
            &schema(),
        )
        .unwrap();
        assert_eq!(v.items[0].mask.as_deref(), Some("m"));
    }
}
