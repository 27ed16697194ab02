//! `--filter key=value`: a subset of a sweep's trials, for `sweep plan` and `sweep run`.
//!
//! A key is a column of the plan (`trial`, `model`, `classes`, `preset`, `scale`, `fold`,
//! `seed`) or a config key the sweep sets or varies (a `param.*` column, e.g.
//! `loss.golgi_weight`). Values compare as text, and as numbers when both sides are numbers
//! (`loss.golgi_weight=1` matches `1.0`). Several filters must all match. A filter selects
//! trials only; it is not part of the trials' ids and is not recorded in the sweep folder.

use super::trial::Trial;

/// The columns every trial has.
const COLUMNS: [&str; 7] = [
    "trial", "model", "classes", "preset", "scale", "fold", "seed",
];

/// Parsed `--filter` arguments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrialFilter {
    conditions: Vec<(String, String)>,
}

impl TrialFilter {
    /// Parses `key=value` arguments.
    pub fn parse(args: &[String]) -> Result<TrialFilter, String> {
        let conditions = args
            .iter()
            .map(|a| match a.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(format!(
                    "--filter {a:?}: expected key=value, e.g. model=unet3d"
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(TrialFilter { conditions })
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// The trials that match every condition. A key that no trial has, or filters that
    /// leave no trial, are errors naming the filter.
    pub fn select(&self, trials: Vec<Trial>) -> Result<Vec<Trial>, String> {
        for (key, _) in &self.conditions {
            let known = COLUMNS.contains(&key.as_str())
                || trials.iter().any(|t| t.params.contains_key(key));
            if !known {
                let mut keys: Vec<&str> = COLUMNS.to_vec();
                let mut params: Vec<&str> = trials
                    .iter()
                    .flat_map(|t| t.params.keys().map(String::as_str))
                    .collect();
                params.sort_unstable();
                params.dedup();
                keys.extend(params);
                let hint = crate::keys::nearest(key, &keys)
                    .map(|n| format!(", did you mean `{n}`?"))
                    .unwrap_or_default();
                return Err(format!(
                    "--filter {key}: not a column of the sweep's trials (one of {}){hint}",
                    keys.join(", ")
                ));
            }
        }
        let selected: Vec<Trial> = trials.into_iter().filter(|t| self.matches(t)).collect();
        if selected.is_empty() {
            return Err(format!("--filter {}: matches no trial", self.describe()));
        }
        Ok(selected)
    }

    fn matches(&self, trial: &Trial) -> bool {
        self.conditions
            .iter()
            .all(|(k, v)| value_of(trial, k).is_some_and(|have| same(&have, v)))
    }

    /// `k=v k2=v2`, for messages.
    pub fn describe(&self) -> String {
        self.conditions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The trial's value in column `key`, as `sweep plan` prints it.
fn value_of(t: &Trial, key: &str) -> Option<String> {
    Some(match key {
        "trial" => t.trial_id.clone(),
        "model" => t.config.model.name().to_string(),
        "classes" => t.config.classes.join(","),
        "preset" => t.config.preset.name().to_string(),
        "scale" => t.config.scale.name().to_string(),
        "fold" => t.fold.to_string(),
        "seed" => t.seed.to_string(),
        k => t.params.get(k)?.clone(),
    })
}

fn same(have: &str, wanted: &str) -> bool {
    if have == wanted {
        return true;
    }
    match (have.parse::<f64>(), wanted.parse::<f64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_as_text_or_as_numbers() {
        assert!(same("1.0", "1"));
        assert!(same("unet3d", "unet3d"));
        assert!(!same("unet3d", "unet"));
        assert!(!same("0.5", "0.50001"));
    }

    #[test]
    fn arguments_need_a_key_and_a_value() {
        assert!(TrialFilter::parse(&["model=unet3d".into()]).is_ok());
        let e = TrialFilter::parse(&["model".into()]).unwrap_err();
        assert!(e.contains("expected key=value"), "{e}");
        assert!(TrialFilter::parse(&["=x".into()]).is_err());
    }
}
