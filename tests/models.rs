//! `seglab models`: the published parameter counts (docs/published-code.md §3.1, §4.1, §4.2,
//! §5.1, §5.2) and the command's error handling.

mod util;

use serde_json::Value;

fn models_json(args: &[&str]) -> Value {
    let out = util::seglab()
        .arg("models")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn paper_scale_counts_equal_the_published_ones() {
    let two = models_json(&["--scale", "paper", "--classes", "2"]);
    assert_eq!(
        two,
        serde_json::json!({
            "unet3d": 22_582_114,
            "vox2vox_generator": 150_498_710,
            "vox2vox_discriminator": 11_060_167,
            "cyclegan_generator": 26_483_270,
            "cyclegan_discriminator": 27_832_513,
        })
    );
    let add = models_json(&["--classes", "golgi,nuclei", "--cyclegan-residual", "add"]);
    assert_eq!(add["cyclegan_generator"], 8_567_366);
    let three = models_json(&["--classes", "3"]);
    assert_eq!(three["unet3d"], 22_588_899 - 5_888);
    assert_eq!(three["vox2vox_generator"], 150_510_999);
    assert_eq!(three["vox2vox_discriminator"], 11_068_359);
    assert_eq!(three["cyclegan_generator"], 26_505_225);
    assert_eq!(three["cyclegan_discriminator"], 27_836_609);
}

#[test]
fn cpu_small_is_much_smaller_and_text_output_is_a_table() {
    let small = models_json(&["--scale", "cpu-small"]);
    let paper = models_json(&[]);
    for key in [
        "unet3d",
        "vox2vox_generator",
        "cyclegan_generator",
        "cyclegan_discriminator",
    ] {
        let (s, p) = (small[key].as_u64().unwrap(), paper[key].as_u64().unwrap());
        assert!(s * 30 < p, "{key}: {s} vs {p}");
    }
    let out = util::seglab()
        .args(["models", "--scale", "cpu-small"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("scale cpu-small (width ÷ 8)"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("vox2vox_generator")),
        "{text}"
    );
}

#[test]
fn bad_arguments_exit_with_2_and_say_why() {
    for (args, needle) in [
        (vec!["--classes", "4"], "1, 2 or 3"),
        (vec!["--scale", "huge"], "paper, cpu-small"),
        (vec!["--width-divisor", "3"], "scale.width_divisor"),
    ] {
        let out = util::seglab().arg("models").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
