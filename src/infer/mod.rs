//! Sliding-window prediction over whole volumes (docs/published-code.md §6): the volume
//! is reflect-padded ([`window`] decides how far and where), cut into overlapping windows,
//! the windows go in batches to a [`WindowPredictor`], and the window probabilities are
//! merged ([`merge`]: `or` as coded, `mean`, `gaussian`) and thresholded into a
//! [`Prediction`].
//!
//! [`predict_volume`] is the one prediction path: the CLI's `predict`, the final validation
//! in training and the evaluation all call it. This module does not know
//! any model or tensor type — models implement [`WindowPredictor`] — and it does no file
//! I/O and no intensity preprocessing (windows are cut from an already preprocessed image).

pub mod calibrate;
pub mod merge;
pub mod window;

use serde::{Deserialize, Serialize};

pub use merge::{GAUSSIAN_SIGMA_SCALE, MergeMode, Merger, gaussian_weights};
pub use window::{WindowGeometry, padded_extent, window_geometry};

use crate::dataset::pad::{PadMode, reflect_map};
use crate::volume::Volume;

/// Errors of sliding-window prediction.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// An invalid setting; names the field and the value.
    #[error("{0}")]
    Config(String),
    /// The predictor failed (its own message).
    #[error("prediction failed: {0}")]
    Predictor(String),
    /// The predictor broke its contract (count, shape or range of its outputs).
    #[error("predictor output: {0}")]
    Output(String),
}

/// A model seen window by window: takes a batch of windows `[C_in, d, h, w]` and returns
/// one probability volume `[out_channels, d, h, w]` per window, values in [0, 1] (a
/// CycleGAN maps its tanh output back with (y + 1)/2 itself, §6 step 3).
pub trait WindowPredictor {
    fn out_channels(&self) -> usize;
    fn predict(&mut self, windows: &[Volume<f32>]) -> Result<Vec<Volume<f32>>, InferError>;
}

/// Sliding-window settings. The defaults are the published procedure (§6): 64³ windows,
/// step 48, high-end reflection padding, OR merge, threshold 0.5.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlidingWindowConfig {
    /// Window size (d, h, w) in voxels.
    pub window: [usize; 3],
    /// Window step (z, y, x) in voxels, 1 ≤ step ≤ window.
    pub step: [usize; 3],
    /// Where the reflection padding goes; also selects the padded-size rule (see `window`).
    pub padding: PadMode,
    pub merge: MergeMode,
    /// A voxel is foreground when its merged probability is > threshold.
    pub threshold: f32,
    /// Windows per predictor call (the published code predicts one at a time; results do
    /// not depend on it).
    pub batch: usize,
    /// Test-time augmentation: each window's prediction is the mean over the window and its
    /// seven mirror images (flipped along every subset of z, y and x), each prediction
    /// flipped back — as nnU-Net predicts (Isensee et al., Nat. Methods 18, 2021). Eight
    /// times the prediction time; not in the published code.
    pub mirror: bool,
}

impl Default for SlidingWindowConfig {
    fn default() -> Self {
        Self {
            window: [64; 3],
            step: [48; 3],
            padding: PadMode::HighEnd,
            merge: MergeMode::Or,
            threshold: 0.5,
            batch: 4,
            mirror: false,
        }
    }
}

impl SlidingWindowConfig {
    /// Checks the ranges; the message names the field and the value.
    pub fn validate(&self) -> Result<(), InferError> {
        let bad = |m: String| Err(InferError::Config(m));
        if self.window.contains(&0) {
            return bad(format!(
                "infer.window must be positive, got {:?}",
                self.window
            ));
        }
        if (0..3).any(|a| self.step[a] == 0 || self.step[a] > self.window[a]) {
            return bad(format!(
                "infer.step must be between 1 and the window size {:?}, got {:?}",
                self.window, self.step
            ));
        }
        if !(0.0..1.0).contains(&self.threshold) {
            return bad(format!(
                "infer.threshold must be in [0, 1), got {}",
                self.threshold
            ));
        }
        if self.batch == 0 {
            return bad("infer.batch must be at least 1, got 0".into());
        }
        Ok(())
    }
}

/// The merged prediction of a whole volume, the volume's size, spacing kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Merged probabilities, [out_channels, Z, Y, X].
    pub probabilities: Volume<f32>,
    /// 0/1 mask: probabilities > threshold.
    pub mask: Volume<u8>,
}

impl Prediction {
    /// The mask with one threshold per class (`p > thresholds[c]` in channel `c`), e.g. the
    /// thresholds calibrated on validation volumes ([`calibrate`]).
    pub fn mask_at(&self, thresholds: &[f32]) -> Result<Volume<u8>, InferError> {
        let p = &self.probabilities;
        if thresholds.len() != p.channels() {
            return Err(InferError::Config(format!(
                "{} thresholds for a prediction with {} classes",
                thresholds.len(),
                p.channels()
            )));
        }
        let mut mask = Volume::<u8>::zeros(p.shape()).with_spacing(p.spacing);
        for (c, &t) in thresholds.iter().enumerate() {
            for (m, &v) in mask.channel_mut(c).iter_mut().zip(p.channel(c)) {
                *m = u8::from(v > t);
            }
        }
        Ok(mask)
    }
}

/// Predicts a whole preprocessed `image` [C, Z, Y, X] window by window.
///
/// Windows are read straight from the unpadded image through reflection index maps (no
/// padded copy), `config.batch` at a time into reused buffers, and merged into a canvas of
/// the image's own size.
pub fn predict_volume(
    predictor: &mut dyn WindowPredictor,
    image: &Volume<f32>,
    config: &SlidingWindowConfig,
) -> Result<Prediction, InferError> {
    config.validate()?;
    let [c, z, y, x] = image.shape();
    if c == 0 || z * y * x == 0 {
        return Err(InferError::Config(format!(
            "cannot predict an empty volume of shape {:?}",
            image.shape()
        )));
    }
    let out_channels = predictor.out_channels();
    if out_channels == 0 {
        return Err(InferError::Output(
            "the predictor has no output channels".into(),
        ));
    }
    let geometry = window_geometry([z, y, x], config.window, config.step, config.padding);
    let maps: [Vec<usize>; 3] = std::array::from_fn(|a| {
        let n = geometry.volume[a];
        reflect_map(
            n,
            geometry.before[a],
            geometry.padded[a] - n - geometry.before[a],
        )
    });
    let [wd, wh, ww] = config.window;
    let mut merger = Merger::new(config.merge, out_channels, &geometry);
    let mut buffers: Vec<Volume<f32>> = Vec::with_capacity(config.batch);
    for chunk in geometry.origins.chunks(config.batch) {
        while buffers.len() < chunk.len() {
            buffers.push(Volume::zeros([c, wd, wh, ww]));
        }
        for (buf, &origin) in buffers.iter_mut().zip(chunk) {
            extract_window(image, &maps, origin, buf);
        }
        let windows = &buffers[..chunk.len()];
        let outputs = if config.mirror {
            predict_mirrored(predictor, windows)?
        } else {
            predictor.predict(windows)?
        };
        if outputs.len() != chunk.len() {
            return Err(InferError::Output(format!(
                "{} windows in, {} predictions out",
                chunk.len(),
                outputs.len()
            )));
        }
        for (out, &origin) in outputs.iter().zip(chunk) {
            let want = [out_channels, wd, wh, ww];
            if out.shape() != want {
                return Err(InferError::Output(format!(
                    "a window prediction has shape {:?}, expected {want:?}",
                    out.shape()
                )));
            }
            if let Some(v) = out.data().iter().find(|v| !(0.0..=1.0).contains(*v)) {
                return Err(InferError::Output(format!(
                    "a window prediction holds {v}, expected probabilities in [0, 1]"
                )));
            }
            merger.add(origin, out);
        }
    }
    let (probabilities, mask) = merger.finish(config.threshold);
    Ok(Prediction {
        probabilities: probabilities.with_spacing(image.spacing),
        mask: mask.with_spacing(image.spacing),
    })
}

/// The predictions of `windows`, each averaged over the window and its seven mirror images
/// (flipped along every non-empty subset of z, y and x), each prediction flipped back
/// ([`SlidingWindowConfig::mirror`]).
fn predict_mirrored(
    predictor: &mut dyn WindowPredictor,
    windows: &[Volume<f32>],
) -> Result<Vec<Volume<f32>>, InferError> {
    let mut sums = predictor.predict(windows)?;
    for flips in 1..8u8 {
        let axes = [flips & 1 != 0, flips & 2 != 0, flips & 4 != 0];
        let mirrored: Vec<Volume<f32>> = windows.iter().map(|w| mirror(w, axes)).collect();
        let outputs = predictor.predict(&mirrored)?;
        if outputs.len() != sums.len() {
            return Err(InferError::Output(format!(
                "{} mirrored windows in, {} predictions out",
                sums.len(),
                outputs.len()
            )));
        }
        for (sum, out) in sums.iter_mut().zip(&outputs) {
            if out.shape() != sum.shape() {
                return Err(InferError::Output(format!(
                    "a mirrored window's prediction has shape {:?}, the window's {:?}",
                    out.shape(),
                    sum.shape()
                )));
            }
            let back = mirror(out, axes);
            for (s, &v) in sum.data_mut().iter_mut().zip(back.data()) {
                *s += v;
            }
        }
    }
    for sum in &mut sums {
        sum.data_mut().iter_mut().for_each(|v| *v /= 8.0);
    }
    Ok(sums)
}

/// `v` flipped along the spatial axes (z, y, x) marked in `axes`.
fn mirror(v: &Volume<f32>, axes: [bool; 3]) -> Volume<f32> {
    let [c, d, h, w] = v.shape();
    let src = v.data();
    let mut out = Volume::zeros(v.shape());
    let dst = out.data_mut();
    let flip = |on: bool, i: usize, n: usize| if on { n - 1 - i } else { i };
    for ch in 0..c {
        for z in 0..d {
            for y in 0..h {
                let from = v.index(ch, flip(axes[0], z, d), flip(axes[1], y, h), 0);
                let to = ((ch * d + z) * h + y) * w;
                let row = &src[from..from + w];
                let dst_row = &mut dst[to..to + w];
                dst_row.copy_from_slice(row);
                if axes[2] {
                    dst_row.reverse();
                }
            }
        }
    }
    out
}

/// Fills `out` [C, d, h, w] with the window at padded `origin`, reading `image` through the
/// per-axis reflection maps (padded index → source index).
fn extract_window(
    image: &Volume<f32>,
    maps: &[Vec<usize>; 3],
    origin: [usize; 3],
    out: &mut Volume<f32>,
) {
    let [c, d, h, w] = out.shape();
    let xmap = &maps[2][origin[2]..origin[2] + w];
    // Inside the volume the x map is a contiguous run: copy rows instead of gathering.
    let contiguous = xmap.windows(2).all(|p| p[1] == p[0] + 1);
    let src = image.data();
    let dst = out.data_mut();
    let mut o = 0;
    for ch in 0..c {
        for &sz in &maps[0][origin[0]..origin[0] + d] {
            for &sy in &maps[1][origin[1]..origin[1] + h] {
                let row = image.index(ch, sz, sy, 0);
                let dst_row = &mut dst[o..o + w];
                if contiguous {
                    dst_row.copy_from_slice(&src[row + xmap[0]..row + xmap[0] + w]);
                } else {
                    for (d, &sx) in dst_row.iter_mut().zip(xmap) {
                        *d = src[row + sx];
                    }
                }
                o += w;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::pad::pad_to;

    /// Returns its input windows: the merged prediction must reproduce the image.
    struct Identity {
        channels: usize,
        calls: usize,
        largest_batch: usize,
    }

    impl WindowPredictor for Identity {
        fn out_channels(&self) -> usize {
            self.channels
        }
        fn predict(&mut self, windows: &[Volume<f32>]) -> Result<Vec<Volume<f32>>, InferError> {
            self.calls += 1;
            self.largest_batch = self.largest_batch.max(windows.len());
            Ok(windows.to_vec())
        }
    }

    /// Values in [0, 1] with many distinct mantissas (to catch any rounding in merging).
    fn image(shape: [usize; 4]) -> Volume<f32> {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| ((i as u64 * 2_654_435_761) % 1_000_003) as f32 / 1_000_003.0)
            .collect();
        Volume::from_vec(shape, data)
            .unwrap()
            .with_spacing(Some([2.0, 0.3, 0.3]))
    }

    #[test]
    fn identity_model_reproduces_the_input_for_every_mode_and_odd_sizes() {
        for shape in [[2, 5, 13, 11], [1, 9, 7, 17], [2, 3, 3, 3], [1, 1, 1, 1]] {
            let img = image(shape);
            for merge in [MergeMode::Or, MergeMode::Mean, MergeMode::Gaussian] {
                for padding in [PadMode::HighEnd, PadMode::Symmetric] {
                    let config = SlidingWindowConfig {
                        window: [4, 6, 5],
                        step: [3, 4, 2],
                        padding,
                        merge,
                        threshold: 0.5,
                        batch: 3,
                        mirror: false,
                    };
                    let mut model = Identity {
                        channels: shape[0],
                        calls: 0,
                        largest_batch: 0,
                    };
                    let p = predict_volume(&mut model, &img, &config).unwrap();
                    assert_eq!(p.probabilities, img, "{shape:?} {merge:?} {padding:?}");
                    let want = img.map(|v| u8::from(v > 0.5));
                    assert_eq!(p.mask, want);
                    assert!(model.largest_batch <= 3);
                }
            }
        }
    }

    #[test]
    fn windows_read_through_maps_equal_windows_of_the_padded_volume() {
        let img = image([2, 5, 7, 9]);
        for mode in [PadMode::HighEnd, PadMode::Symmetric] {
            let g = window_geometry([5, 7, 9], [4, 4, 4], [2, 3, 3], mode);
            let (padded, before) = pad_to(&img, g.padded, mode);
            assert_eq!(before, g.before);
            let maps: [Vec<usize>; 3] = std::array::from_fn(|a| {
                let n = g.volume[a];
                reflect_map(n, g.before[a], g.padded[a] - n - g.before[a])
            });
            let mut out = Volume::zeros([2, 4, 4, 4]);
            for &o in &g.origins {
                extract_window(&img, &maps, o, &mut out);
                assert_eq!(out, padded.crop(o, [4, 4, 4]).with_spacing(None), "{o:?}");
            }
        }
    }

    #[test]
    fn published_window_count_and_batching() {
        let img = Volume::<f32>::zeros([2, 10, 70, 100]);
        let mut model = Identity {
            channels: 2,
            calls: 0,
            largest_batch: 0,
        };
        let config = SlidingWindowConfig {
            batch: 4,
            ..Default::default()
        };
        predict_volume(&mut model, &img, &config).unwrap();
        // Y 70 → 112 (2 windows), X 100 → 160 (3 windows), Z one window: 6 windows.
        assert_eq!((model.calls, model.largest_batch), (2, 4));
    }

    /// Ignores its input: every window's prediction rises along x from 0 to 1.
    struct RampAlongX;

    impl WindowPredictor for RampAlongX {
        fn out_channels(&self) -> usize {
            1
        }
        fn predict(&mut self, windows: &[Volume<f32>]) -> Result<Vec<Volume<f32>>, InferError> {
            let [_, d, h, w] = windows[0].shape();
            let ramp = (0..d * h * w)
                .map(|i| (i % w) as f32 / (w - 1) as f32)
                .collect();
            let out = Volume::from_vec([1, d, h, w], ramp).unwrap();
            Ok(vec![out; windows.len()])
        }
    }

    #[test]
    fn mirrored_prediction_flips_windows_and_predictions_back() {
        // A model that commutes with flips (the identity) keeps its prediction: each mirror
        // image's prediction is flipped back onto the window.
        let img = image([2, 5, 13, 11]);
        let config = SlidingWindowConfig {
            window: [4, 6, 5],
            step: [3, 4, 2],
            merge: MergeMode::Mean,
            batch: 3,
            mirror: true,
            ..Default::default()
        };
        let mut identity = Identity {
            channels: 2,
            calls: 0,
            largest_batch: 0,
        };
        let p = predict_volume(&mut identity, &img, &config).unwrap();
        for (a, b) in p.probabilities.data().iter().zip(img.data()) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let windows = window_geometry([5, 13, 11], config.window, config.step, config.padding)
            .origins
            .len();
        assert_eq!(identity.calls, 8 * windows.div_ceil(3));
        // A model that does not: its x ramp and the flipped-back ramps of the four x-mirrored
        // images average to 1/2 everywhere; without mirroring the ramp stays.
        let flat = predict_volume(&mut RampAlongX, &img, &config).unwrap();
        assert!(
            flat.probabilities
                .data()
                .iter()
                .all(|v| (v - 0.5).abs() < 1e-6)
        );
        let plain = SlidingWindowConfig {
            mirror: false,
            ..config
        };
        let ramp = predict_volume(&mut RampAlongX, &img, &plain).unwrap();
        assert!(
            ramp.probabilities
                .data()
                .iter()
                .any(|v| (v - 0.5).abs() > 0.1)
        );
    }

    struct Broken(Vec<Volume<f32>>);
    impl WindowPredictor for Broken {
        fn out_channels(&self) -> usize {
            1
        }
        fn predict(&mut self, _w: &[Volume<f32>]) -> Result<Vec<Volume<f32>>, InferError> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn contract_breaches_and_bad_configs_are_errors() {
        let img = Volume::<f32>::zeros([1, 4, 4, 4]);
        let config = SlidingWindowConfig {
            window: [4; 3],
            step: [4; 3],
            batch: 1,
            ..Default::default()
        };
        let e = predict_volume(&mut Broken(vec![]), &img, &config).unwrap_err();
        assert!(
            e.to_string().contains("1 windows in, 0 predictions out"),
            "{e}"
        );
        let wrong = Volume::zeros([1, 4, 4, 3]);
        let e = predict_volume(&mut Broken(vec![wrong]), &img, &config).unwrap_err();
        assert!(e.to_string().contains("shape [1, 4, 4, 3]"), "{e}");
        let tanh = Volume::filled([1, 4, 4, 4], -0.5);
        let e = predict_volume(&mut Broken(vec![tanh]), &img, &config).unwrap_err();
        assert!(e.to_string().contains("holds -0.5"), "{e}");
        for (bad, field) in [
            (
                SlidingWindowConfig {
                    step: [48, 65, 48],
                    ..Default::default()
                },
                "infer.step",
            ),
            (
                SlidingWindowConfig {
                    threshold: 1.0,
                    ..Default::default()
                },
                "infer.threshold",
            ),
            (
                SlidingWindowConfig {
                    batch: 0,
                    ..Default::default()
                },
                "infer.batch",
            ),
            (
                SlidingWindowConfig {
                    window: [0, 64, 64],
                    ..Default::default()
                },
                "infer.window",
            ),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
    }
}
