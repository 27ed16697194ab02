//! TIFF read and write throughput on a volume of the thesis' crop size
//! (2 channels × 56 × 627 × 647), uint8 and uint16, uncompressed and Deflate (plus LZW and
//! PackBits for reference), and the per-channel statistics of `seglab inspect`.
//!
//! Run: `cargo bench --bench io` (set `SEGLAB_PYTHON` to also time tifffile reading the same
//! files). MB/s counts voxel bytes (10^6 bytes of samples per second), not file bytes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use seglab::volume::stats::channel_stats;
use seglab::volume::{
    AnyVolume, BigTiff, Compression, TiffWriteOptions, Volume, read_tiff, write_tiff_with,
};

const SHAPE: [usize; 4] = [2, 56, 627, 647];
const REPEATS: usize = 3;

/// A microscopy-like volume: dim noisy background with bright smooth blobs, so that the
/// compressed sizes are realistic (neither constant nor white noise).
fn phantom(max: f64) -> Vec<f64> {
    let [c, z, y, x] = SHAPE;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let blobs: Vec<[f64; 4]> = (0..60)
        .map(|i| {
            [
                (i % 2) as f64,
                noise() * z as f64,
                noise() * y as f64,
                noise() * x as f64,
            ]
        })
        .collect();
    let mut out: Vec<f64> = (0..c * z * y * x).map(|_| 0.05 + 0.03 * noise()).collect();
    // Each blob only touches its bounding box (radius 30 voxels in y and x, 15 in z).
    for b in &blobs {
        let (ci, bz, by, bx) = (b[0] as usize, b[1], b[2], b[3]);
        let range = |centre: f64, r: f64, n: usize| {
            ((centre - r).max(0.0) as usize)..((centre + r).ceil().max(0.0) as usize).min(n)
        };
        for zi in range(bz, 15.0, z) {
            for yi in range(by, 30.0, y) {
                for xi in range(bx, 30.0, x) {
                    let d2 = ((zi as f64 - bz) * 2.0).powi(2)
                        + (yi as f64 - by).powi(2)
                        + (xi as f64 - bx).powi(2);
                    if d2 < 900.0 {
                        out[((ci * z + zi) * y + yi) * x + xi] += 0.8 * (-d2 / 300.0).exp();
                    }
                }
            }
        }
    }
    out.iter().map(|v| (v.min(1.0) * max).round()).collect()
}

fn best<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..REPEATS {
        let start = Instant::now();
        let v = f();
        best = best.min(start.elapsed());
        last = Some(v);
    }
    (best, last.expect("REPEATS > 0"))
}

fn tifffile_read_ms(python: &str, file: &Path) -> Option<f64> {
    let script = "import sys, time, tifffile\n\
                  best = 1e9\n\
                  for _ in range(3):\n    t = time.perf_counter(); tifffile.imread(sys.argv[1])\n    \
                  best = min(best, time.perf_counter() - t)\n\
                  print(best * 1000)";
    let out = Command::new(python)
        .args(["-c", script, file.to_str()?])
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let python = std::env::var("SEGLAB_PYTHON").ok();
    let threads = rayon::current_num_threads();
    println!("TIFF I/O, volume {SHAPE:?} (C, Z, Y, X), best of {REPEATS}, {threads} rayon threads");
    println!(
        "{:<8} {:<9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "dtype",
        "codec",
        "file MB",
        "write ms",
        "write MB/s",
        "read ms",
        "read MB/s",
        "tifffile ms"
    );
    let u8s = phantom(255.0);
    let volumes: Vec<AnyVolume> = vec![
        Volume::from_vec(SHAPE, u8s.iter().map(|&v| v as u8).collect())
            .expect("shape")
            .with_spacing(Some([0.5, 0.1, 0.1]))
            .into(),
        Volume::from_vec(SHAPE, phantom(4095.0).iter().map(|&v| v as u16).collect())
            .expect("shape")
            .with_spacing(Some([0.5, 0.1, 0.1]))
            .into(),
    ];
    let codecs = [
        Compression::None,
        Compression::Deflate,
        Compression::Lzw,
        Compression::PackBits,
    ];
    for volume in &volumes {
        let voxel_mb = (volume.shape().iter().product::<usize>()
            * match volume.dtype().name() {
                "uint8" => 1,
                _ => 2,
            }) as f64
            / 1e6;
        for compression in codecs {
            let file = dir
                .path()
                .join(format!("{}-{}.tif", volume.dtype(), compression.name()));
            let options = TiffWriteOptions {
                compression,
                bigtiff: BigTiff::Auto,
            };
            let (write, ()) = best(|| write_tiff_with(&file, volume, &options).expect("write"));
            let (read, back) = best(|| read_tiff(&file).expect("read"));
            assert!(back == *volume, "round trip changed the volume");
            let size = std::fs::metadata(&file).expect("file").len() as f64 / 1e6;
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let reference = python
                .as_deref()
                .and_then(|p| tifffile_read_ms(p, &file))
                .map_or("-".to_owned(), |t| format!("{t:.1}"));
            println!(
                "{:<8} {:<9} {:>9.1} {:>9.1} {:>9.0} {:>9.1} {:>9.0} {:>12}",
                volume.dtype().name(),
                compression.name(),
                size,
                ms(write),
                voxel_mb / write.as_secs_f64(),
                ms(read),
                voxel_mb / read.as_secs_f64(),
                reference
            );
        }
        let (stats, _) = best(|| channel_stats(volume));
        println!(
            "{:<8} per-channel statistics (inspect): {:.1} ms",
            volume.dtype().name(),
            stats.as_secs_f64() * 1e3
        );
    }
}
