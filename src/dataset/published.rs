//! The published dataset's conventions, in one place: the eight retina crops of Rosa et al.
//! (thesis §4.1; the crop sizes are those of the published repository's synthetic-mask
//! notebooks), their file layout, and the two published splits.
//!
//! - **Layout**: `Images/<crop>.tif` and `Masks/<crop>.tif`, each a stack of RGB pages (one per
//!   z slice, uint8): red = Golgi, green = nuclei, blue = empty in images and the
//!   nucleus–Golgi pairs in 3-class masks (thesis §4.1, "These masks are RGB …").
//! - **Thesis split** (thesis §5.3: "6 of these crops are used to train the models and 2 of them
//!   are used for testing"; the published notebooks validate on Crop4 and Crop6_BC): one fold.
//! - **Paper split** (EMBC paper §II-C: "a nested 3-fold cross-validation … two microscopy
//!   images (one for training and one for validation) and … a held-out test microscopy image"):
//!   the paper's folds are three whole retina images, whose crops are not identified; over the
//!   crops it is the nested 3-fold of [`super::splits`] with split seed 0, written out as fixed
//!   folds so that it never changes.

use super::splits::{Fold, SplitScheme, make_splits};

/// One published crop: its file stem and shape (Z, Y, X).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub name: &'static str,
    pub shape: [usize; 3],
}

/// The eight crops in the published order (X × Y × Z in the published notebooks, here
/// (Z, Y, X)).
pub const CROPS: [Crop; 8] = [
    Crop {
        name: "Crop1",
        shape: [56, 618, 505],
    },
    Crop {
        name: "Crop2",
        shape: [56, 553, 703],
    },
    Crop {
        name: "Crop3",
        shape: [56, 553, 668],
    },
    Crop {
        name: "Crop4",
        shape: [56, 257, 818],
    },
    Crop {
        name: "Crop5_BC",
        shape: [56, 627, 647],
    },
    Crop {
        name: "Crop6_BC",
        shape: [56, 627, 647],
    },
    Crop {
        name: "Crop7_BC",
        shape: [55, 491, 557],
    },
    Crop {
        name: "Crop8_BC",
        shape: [61, 519, 586],
    },
];

/// Folder of the image stacks in the published layout.
pub const IMAGES_DIR: &str = "Images";
/// Folder of the mask stacks in the published layout.
pub const MASKS_DIR: &str = "Masks";

/// Channel names of the RGB pages, red, green, blue (the blue channel of an image is empty).
pub const RGB_CHANNELS: [&str; 3] = ["golgi", "nuclei", "pair"];

/// Hours of manual annotation per crop, as the thesis estimates them (thesis §5.3.4, Table 5.7).
pub const ANNOTATION_HOURS_PER_CROP: f64 = 28.0;

/// Names of the split presets a published-layout import writes into `dataset.toml`.
pub const THESIS_SPLIT: &str = "thesis";
pub const PAPER_SPLIT: &str = "paper";

/// The mean voxel count of the eight crops: the size of crop the thesis' 28 hours of
/// annotation refer to.
pub fn mean_crop_voxels() -> f64 {
    let total: usize = CROPS
        .iter()
        .map(|c| c.shape.iter().product::<usize>())
        .sum();
    total as f64 / CROPS.len() as f64
}

/// The crop named `name`, if it is one of the eight.
pub fn crop(name: &str) -> Option<&'static Crop> {
    CROPS.iter().find(|c| c.name == name)
}

/// The shape of a crop drawn at `scale` of its published extent in Y and X (Z unchanged:
/// the objects keep their published size, so a smaller crop holds fewer of them).
pub fn scaled_shape(crop: &Crop, scale: f64) -> [usize; 3] {
    let [z, y, x] = crop.shape;
    let s = |n: usize| ((n as f64 * scale).round() as usize).max(1);
    [z, s(y), s(x)]
}

/// The thesis split as one fold: training Crop1, Crop2, Crop3 and Crop8_BC, validation Crop4
/// and Crop6_BC, test Crop5_BC and Crop7_BC.
pub fn thesis_split() -> Vec<Fold> {
    let ids = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    vec![Fold {
        index: 0,
        train: ids(&["Crop1", "Crop2", "Crop3", "Crop8_BC"]),
        val: ids(&["Crop4", "Crop6_BC"]),
        test: ids(&["Crop5_BC", "Crop7_BC"]),
    }]
}

/// The paper's nested 3-fold over the eight crops (module doc).
pub fn paper_split() -> Vec<Fold> {
    let ids: Vec<String> = CROPS.iter().map(|c| c.name.to_string()).collect();
    let groups = vec![None; ids.len()];
    make_splits(&ids, &groups, &SplitScheme::Nested { k: 3 }, 0)
        .expect("eight crops make a nested 3-fold")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thesis_split_uses_every_crop_once() {
        let f = &thesis_split()[0];
        let mut all: Vec<&String> = f.train.iter().chain(&f.val).chain(&f.test).collect();
        all.sort();
        let mut names: Vec<String> = CROPS.iter().map(|c| c.name.to_string()).collect();
        names.sort();
        assert_eq!(all, names.iter().collect::<Vec<_>>());
        assert_eq!(f.test, vec!["Crop5_BC", "Crop7_BC"]);
    }

    #[test]
    fn paper_split_tests_every_crop_once() {
        let folds = paper_split();
        assert_eq!(folds.len(), 3);
        let mut tested: Vec<String> = folds.iter().flat_map(|f| f.test.clone()).collect();
        tested.sort();
        assert_eq!(tested.len(), 8);
        tested.dedup();
        assert_eq!(tested.len(), 8);
    }

    #[test]
    fn mean_crop_is_about_nineteen_million_voxels() {
        assert!((mean_crop_voxels() - 18.84e6).abs() < 0.01e6);
    }

    #[test]
    fn scaled_shapes_keep_depth() {
        let c = crop("Crop7_BC").unwrap();
        assert_eq!(scaled_shape(c, 1.0), [55, 491, 557]);
        assert_eq!(scaled_shape(c, 0.25), [55, 123, 139]);
    }
}
