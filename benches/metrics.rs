//! Speed of the metrics on a volume of the thesis' crop size (2 × 56 × 627 × 647, golgi and
//! nuclei): voxel metrics (budget 0.1 s), connected components (budget 1 s), the distance
//! transform, HD95/ASSD and the whole `evaluate`. Run with
//! `RAYON_NUM_THREADS=2 cargo bench --bench metrics`; prints the best and median of several
//! runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use seglab::metrics::components::label;
use seglab::metrics::edt::squared_distance_to_features;
use seglab::metrics::matching::match_objects;
use seglab::metrics::surface::surface_distances;
use seglab::metrics::{Connectivity, EvalConfig, ObjectMatching, evaluate, voxel_metrics};
use seglab::volume::Volume;

const SHAPE: [usize; 3] = [56, 627, 647];

/// Paints ellipsoids (centre z, y, x, radii z, y, x in voxels) into channel `c` of `v`.
fn paint(v: &mut Volume<u8>, c: usize, blobs: &[[f64; 6]]) {
    for b in blobs {
        let lo = |a: usize| (b[a] - b[a + 3]).floor().max(0.0) as usize;
        let hi = |a: usize| ((b[a] + b[a + 3]).ceil() as usize + 1).min(SHAPE[a]);
        for z in lo(0)..hi(0) {
            for y in lo(1)..hi(1) {
                for x in lo(2)..hi(2) {
                    let d = [z as f64, y as f64, x as f64];
                    let r: f64 = (0..3).map(|a| ((d[a] - b[a]) / b[a + 3]).powi(2)).sum();
                    if r <= 1.0 {
                        v.set(c, z, y, x, 1);
                    }
                }
            }
        }
    }
}

/// Reference and prediction: 60 nuclei and 60 Golgi (the thesis' crops hold 45–69 pairs), the prediction jittered,
/// with a few misses, extra objects and speckle.
fn volumes() -> (Volume<u8>, Volume<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let shape = [2, SHAPE[0], SHAPE[1], SHAPE[2]];
    let (mut gt, mut pred) = (Volume::zeros(shape), Volume::zeros(shape));
    // (channel, radius range z, radius range y/x): golgi small, nuclei large.
    for (c, rz, rxy) in [(0, 2.0..4.0, 4.0..9.0), (1, 5.0..12.0, 14.0..28.0)] {
        let mut blobs = Vec::new();
        for _ in 0..60 {
            let r = [
                rng.random_range(rz.clone()),
                rng.random_range(rxy.clone()),
                rng.random_range(rxy.clone()),
            ];
            let p: [f64; 3] = std::array::from_fn(|a| rng.random_range(0.0..SHAPE[a] as f64));
            blobs.push([p[0], p[1], p[2], r[0], r[1], r[2]]);
        }
        paint(&mut gt, c, &blobs);
        let mut jittered = Vec::new();
        for b in &blobs {
            if rng.random_bool(0.1) {
                continue;
            }
            let mut j = *b;
            for a in 0..3 {
                j[a] += rng.random_range(-2.0..2.0);
                j[a + 3] *= rng.random_range(0.85..1.15);
            }
            jittered.push(j);
        }
        paint(&mut pred, c, &jittered);
    }
    for v in pred.data_mut().iter_mut() {
        if rng.random_bool(0.0005) {
            *v = 1;
        }
    }
    (pred, gt)
}

/// CPU time of the whole process (all threads), in seconds.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Wall and CPU time of one run.
#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: f64,
}

/// Runs `f` `n` times; returns the runs sorted by wall time.
fn time<T>(n: usize, mut f: impl FnMut() -> T) -> Vec<Timing> {
    let mut t: Vec<Timing> = (0..n)
        .map(|_| {
            let (start, cpu) = (Instant::now(), cpu_seconds());
            black_box(f());
            Timing {
                wall: start.elapsed(),
                cpu: cpu_seconds() - cpu,
            }
        })
        .collect();
    t.sort_by_key(|t| t.wall);
    t
}

/// Prints best and median wall time and the CPU time of the best run. On a shared machine
/// the wall time grows with the load; the CPU time does not, and CPU / threads estimates the
/// wall time of an idle machine for code that keeps every thread busy.
fn report(what: &str, t: Vec<Timing>, budget: Option<f64>) {
    let (best, median) = (t[0], t[t.len() / 2]);
    let verdict = match budget {
        Some(b) if best.wall.as_secs_f64() <= b => format!("  budget {b} s: ok"),
        Some(b) => format!("  budget {b} s: OVER"),
        None => String::new(),
    };
    println!(
        "{what:<46} best {:>7.3} s  median {:>7.3} s  cpu {:>7.3} s{verdict}",
        best.wall.as_secs_f64(),
        median.wall.as_secs_f64(),
        best.cpu
    );
}

fn main() {
    let threads = rayon::current_num_threads();
    let (pred, gt) = volumes();
    let fg: Vec<f64> = (0..2)
        .map(|c| gt.channel(c).iter().filter(|&&v| v != 0).count() as f64 / gt.voxels() as f64)
        .collect();
    println!(
        "metrics benchmark: 2 × {} × {} × {} voxels, {threads} threads, reference foreground \
         golgi {:.2} %, nuclei {:.2} %",
        SHAPE[0],
        SHAPE[1],
        SHAPE[2],
        100.0 * fg[0],
        100.0 * fg[1]
    );
    let config = EvalConfig::default();

    report(
        "voxel metrics, 2 channels",
        time(9, || voxel_metrics(&pred, &gt, &config).unwrap()),
        Some(0.1),
    );
    for c in Connectivity::ALL {
        report(
            &format!("components, 2 channels, {c}-connected"),
            time(5, || {
                rayon::join(
                    || label(pred.channel(0), SHAPE, c),
                    || label(pred.channel(1), SHAPE, c),
                )
            }),
            Some(1.0),
        );
    }
    let counts = (
        label(gt.channel(0), SHAPE, config.connectivity).count(),
        label(gt.channel(1), SHAPE, config.connectivity).count(),
    );
    println!(
        "  (reference objects: golgi {}, nuclei {})",
        counts.0, counts.1
    );
    report(
        "objects (label, filter, match), nuclei",
        time(5, || {
            let (lp, lg) = rayon::join(
                || label(pred.channel(1), SHAPE, config.connectivity).without_smaller_than(50),
                || label(gt.channel(1), SHAPE, config.connectivity).without_smaller_than(50),
            );
            match_objects(&lp, &lg, ObjectMatching::Iou, 0.5)
        }),
        None,
    );
    report(
        "exact EDT, one channel (22.7 M voxels)",
        time(3, || {
            squared_distance_to_features(gt.channel(1), SHAPE, [0.5, 0.1, 0.1])
        }),
        None,
    );
    for (c, name) in [(0, "golgi"), (1, "nuclei")] {
        report(
            &format!("HD95 + ASSD, {name}"),
            time(3, || {
                surface_distances(pred.channel(c), gt.channel(c), SHAPE, [0.5, 0.1, 0.1])
            }),
            None,
        );
    }
    report(
        "evaluate, 2 classes, everything",
        time(3, || {
            evaluate(&pred, &gt, &["golgi", "nuclei"], &config).unwrap()
        }),
        None,
    );
    let fast = EvalConfig {
        surfaces: false,
        ..EvalConfig::default()
    };
    report(
        "evaluate, 2 classes, without surfaces",
        time(3, || {
            evaluate(&pred, &gt, &["golgi", "nuclei"], &fast).unwrap()
        }),
        None,
    );
}
