//! Figures of a report: every PNG decodes, has a sensible size and real content (many
//! distinct colours, text in the title strip), every SVG names the bundled font, and slice
//! overlays draw the class colours.

mod util;

use std::collections::HashSet;
use std::path::Path;

use seglab::report::{self, ReportOptions, fixture};

struct Png {
    width: u32,
    height: u32,
    /// RGB triples, row-major.
    rgb: Vec<[u8; 3]>,
}

fn decode(path: &Path) -> Png {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{}", path.display());
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    Png {
        width: info.width,
        height: info.height,
        rgb,
    }
}

fn report_with_slices(out: &Path) -> report::ReportSummary {
    let mut input = fixture::small_sweep();
    input.slices.push(fixture::slice_set());
    report::write_report(&input, out, &ReportOptions::default()).expect("report")
}

#[test]
fn every_png_has_size_and_content() {
    let tmp = util::temp_dir();
    let out = tmp.path().join("r");
    let summary = report_with_slices(&out);
    let pngs: Vec<&String> = summary
        .figures
        .iter()
        .filter(|f| f.ends_with(".png"))
        .collect();
    assert!(pngs.len() >= 9, "{pngs:?}");
    for f in pngs {
        let img = decode(&out.join(f));
        assert!(
            img.width >= 600 && img.height >= 250,
            "{f}: {}×{}",
            img.width,
            img.height
        );
        assert_eq!(img.rgb.len(), (img.width * img.height) as usize, "{f}");
        let distinct: HashSet<[u8; 3]> = img.rgb.iter().copied().collect();
        assert!(distinct.len() >= 30, "{f}: only {} colours", distinct.len());
        let inked = img.rgb.iter().filter(|p| **p != [255, 255, 255]).count();
        assert!(
            inked * 50 > img.rgb.len(),
            "{f}: {inked} of {} pixels drawn",
            img.rgb.len()
        );
        // the title is rendered with real glyphs: dark anti-aliased pixels in the top strip
        let w = img.width as usize;
        let dark = img.rgb[..50 * w]
            .iter()
            .filter(|p| p.iter().all(|&c| c < 90))
            .count();
        assert!(dark > 100, "{f}: title strip has {dark} dark pixels");
    }
}

#[test]
fn svgs_use_the_bundled_font_and_label_their_axes() {
    let tmp = util::temp_dir();
    let out = tmp.path().join("r");
    let summary = report_with_slices(&out);
    let svgs: Vec<&String> = summary
        .figures
        .iter()
        .filter(|f| f.ends_with(".svg"))
        .collect();
    assert!(!svgs.is_empty());
    for f in &svgs {
        let text = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(text.contains("<svg"), "{f}");
        assert!(
            text.contains("font-family=\"DejaVu Sans, sans-serif\""),
            "{f}"
        );
    }
    let read = |name: &str| std::fs::read_to_string(out.join("figures").join(name)).unwrap();
    assert!(read("learning-curves-2class-unet3d.svg").contains("\nEpoch\n"));
    assert!(read("timing-2class.svg").contains("\nTime (h)\n"));
    assert!(read("boxplot-2class-dice.svg").contains("Dice per (trial, test volume) (unitless)"));
    let forest = read("forest-2class-dice.svg");
    assert!(forest.contains("Dice difference A − B"), "{forest}");
    assert!(forest.contains("Nuclei: U-Net − Vox2Vox"), "{forest}");
    assert!(read("sweep-2class-golgi_weight.svg").contains("golgi_weight (value as configured)"));
}

#[test]
fn slice_overlay_draws_each_class_and_model() {
    let tmp = util::temp_dir();
    let out = tmp.path().join("r");
    let summary = report_with_slices(&out);
    assert!(
        summary
            .figures
            .contains(&"figures/slices-vol05.png".to_string())
    );
    let img = decode(&out.join("figures/slices-vol05.png"));
    // four panels (image, ground truth, two models) of a 64 × 48 slice scaled by 5
    assert!(img.width >= 4 * 320, "{}", img.width);
    let count = |c: [u8; 3]| img.rgb.iter().filter(|p| **p == c).count();
    let golgi = count([255, 60, 60]);
    let nuclei = count([40, 220, 80]);
    assert!(golgi > 200, "golgi outline pixels: {golgi}");
    assert!(nuclei > 1000, "nuclei outline pixels: {nuclei}");
    let md = std::fs::read_to_string(out.join("index.md")).unwrap();
    assert!(md.contains("Test volume vol05, slice z = 4"), "{md}");
}

#[test]
fn a_slice_set_with_wrong_shapes_is_reported_not_drawn() {
    let tmp = util::temp_dir();
    let out = tmp.path().join("r");
    let mut input = fixture::small_sweep();
    let mut set = fixture::slice_set();
    set.predictions[1].1 = seglab::volume::Volume::zeros([2, 8, 48, 63]);
    input.slices.push(set);
    let summary = report::write_report(&input, &out, &ReportOptions::default()).unwrap();
    let w = summary.warnings.join("\n");
    assert!(
        w.contains("prediction of CycleGAN has shape [8, 48, 63]"),
        "{w}"
    );
    assert!(!out.join("figures/slices-vol05.png").exists());
}
