//! Fidelity presets: the published code, the thesis text and the EMBC paper disagree in places
//! (learning rates, class weights, percentiles, residual blocks). A [`Preset`] selects one
//! consistent set of those values; every module maps the preset to its own settings and every
//! single value stays overridable. See docs/published-code.md §10 for the disagreements.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which source a default value follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// As the released notebooks behave (the default).
    #[default]
    Code,
    /// As the MSc thesis text says.
    Thesis,
    /// As the EMBC 2023 paper says.
    Paper,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Code, Preset::Thesis, Preset::Paper];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Code => "code",
            Preset::Thesis => "thesis",
            Preset::Paper => "paper",
        }
    }
}

display_by_name!(Preset);

impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown preset `{s}`, expected one of: code, thesis, paper"))
    }
}
