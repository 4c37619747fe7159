//! Golden tests of the tuning lab's report: `tests/fixtures/lab-smoke/` is a results folder of a
//! real smoke run (`tuning/lab-smoke.sh`, RF=1 cells measured, RF=3 cells skipped; the runs'
//! time series removed to keep it small, nothing else changed). The report generated from it
//! must equal `tests/fixtures/lab-smoke.REPORT.md` and `lab-smoke.summary.json`, and every plot
//! must be well-formed SVG with the expected series.
//!
//! After an intended change of the report, regenerate the golden files with
//! `UPDATE_GOLDEN=1 cargo test --release -p shardlog-bench --test lab_report` and read the diff.

use std::path::{Path, PathBuf};

use shardlog_bench::lab_report::{write_report, Summary};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read fixture dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// The fixture copied to a folder named like a results folder, with its report written.
fn generated() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("smoke-2026-12-05");
    copy_dir(&fixtures().join("lab-smoke"), &dir);
    write_report(&dir).expect("report");
    (tmp, dir)
}

fn check_golden(got: &str, golden: &Path) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(golden).expect("golden file");
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
        panic!(
            "{} differs from the generated text at line {}:\n  golden:    {:?}\n  generated: {:?}\n(UPDATE_GOLDEN=1 rewrites it)",
            golden.display(),
            line + 1,
            want.lines().nth(line),
            got.lines().nth(line)
        );
    }
}

#[test]
fn report_and_summary_match_the_golden_files() {
    let (_tmp, dir) = generated();
    let report = std::fs::read_to_string(dir.join("REPORT.md")).expect("REPORT.md");
    check_golden(&report, &fixtures().join("lab-smoke.REPORT.md"));
    let summary = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    check_golden(&summary, &fixtures().join("lab-smoke.summary.json"));
}

#[test]
fn profiles_follow_the_stated_rule() {
    let (_tmp, dir) = generated();
    let s: Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("read"))
            .expect("summary");
    let pick = |name: &str| {
        let p = s.profiles.iter().find(|p| p.name == name).expect("profile");
        let id = p.cell.clone().expect("a cell");
        (
            s.cells.iter().find(|c| c.id == id).expect("cell").clone(),
            p.snippet.clone(),
        )
    };
    // The smoke fixture measured one-copy (RF=1) cells only: none survives the loss of its
    // machine, so there is no durable or balanced profile, and the report says so.
    for name in ["durable", "balanced"] {
        let p = s.profiles.iter().find(|p| p.name == name).expect("profile");
        assert!(p.cell.is_none() && p.snippet.is_empty(), "{name}: {p:?}");
    }
    let report = std::fs::read_to_string(dir.join("REPORT.md")).expect("REPORT.md");
    assert!(report.contains("### durable\n\nNo configuration that qualifies was measured."));
    // The rule, recomputed here: the highest median throughput within 5% ties, then lowest p99.
    let (fast, _) = pick("fast");
    let measured: Vec<_> = s.cells.iter().filter(|c| c.median.is_some()).collect();
    let best = measured
        .iter()
        .map(|c| c.median.expect("median").produce_mb_per_s)
        .fold(f64::MIN, f64::max);
    let want = measured
        .iter()
        .filter(|c| c.median.expect("median").produce_mb_per_s >= best * 0.95)
        .min_by(|a, b| {
            let (a, b) = (a.median.expect("m"), b.median.expect("m"));
            a.publish_p99_ms.total_cmp(&b.publish_p99_ms)
        })
        .expect("a cell");
    assert_eq!(fast.id, want.id);
    // Skipped cells are reported as such, with no figures.
    let skipped: Vec<_> = s.cells.iter().filter(|c| !c.skipped.is_empty()).collect();
    assert!(!skipped.is_empty());
    assert!(skipped
        .iter()
        .all(|c| c.replication_factor == 3 && c.median.is_none()));
}

fn svg(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn texts(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect()
}

#[test]
fn every_plot_parses_and_has_its_series() {
    let (_tmp, dir) = generated();
    let s: Summary = serde_json::from_str(&svg(&dir, "summary.json")).expect("summary");
    let measured = |acks: &str| {
        s.cells
            .iter()
            .filter(|c| c.acks.name() == acks && c.median.is_some())
            .count()
    };

    // Throughput against p99: one legend entry per acks level, one labelled point per
    // measured configuration.
    let text = svg(&dir, "throughput-vs-p99.svg");
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let t = texts(&doc);
    for a in ["acks=0", "acks=1", "acks=all"] {
        assert!(t.iter().any(|x| x == a), "legend {a} in {t:?}");
    }
    let points = t.iter().filter(|x| x.starts_with("rf")).count();
    assert_eq!(points, measured("0") + measured("1") + measured("all"));
    let circles = doc
        .descendants()
        .filter(|n| n.has_tag_name("circle"))
        .count();
    assert_eq!(
        circles,
        points + 3,
        "points plus one legend marker per acks level"
    );

    // CDFs: one line per measured configuration of that acks level.
    for a in ["0", "1", "all"] {
        let text = svg(&dir, &format!("cdf-acks-{a}.svg"));
        let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
            .count();
        assert_eq!(lines, measured(a), "cdf-acks-{a}.svg");
        assert!(texts(&doc)
            .iter()
            .any(|x| x == "rf1 every-batch" || x.starts_with("rf1 every-batch")));
    }

    // Heat maps: every row and column named, one value per measured cell, "-" for the rest.
    for name in ["heatmap-throughput.svg", "heatmap-p99.svg"] {
        let text = svg(&dir, name);
        let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
        let t = texts(&doc);
        for label in [
            "acks=0",
            "acks=all min.isr=1",
            "acks=all min.isr=2",
            "rf=1 never",
            "rf=3 every-batch",
        ] {
            assert!(t.iter().any(|x| x == label), "{name}: {label} in {t:?}");
        }
        let dashes = t.iter().filter(|x| *x == "-").count();
        let rows = 4; // acks=0, acks=1, acks=all min.isr=1, acks=all min.isr=2
        let cols = 6; // rf {1,3} x 3 flush policies
        let measured_cells = s.cells.iter().filter(|c| c.median.is_some()).count();
        assert_eq!(dashes, rows * cols - measured_cells, "{name}");
    }
}
