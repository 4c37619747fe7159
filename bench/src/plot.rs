//! SVG charts drawn with `plotters` (its SVG backend, no system fonts): the line charts of a
//! run (`report::plots`) and the tuning lab's scatter, CDF and heat-map charts. Every function
//! returns the SVG text; a drawing error (which the string backend does not produce in
//! practice) is returned, not unwrapped.

use plotters::prelude::*;

/// A series of a line chart.
pub struct Series<'a> {
    /// Legend.
    pub name: &'a str,
    /// Stroke colour, `#rrggbb`.
    pub color: &'a str,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// How a line chart's x axis is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Linear.
    Linear,
    /// Percentiles on the "1/(1-p)" log scale of a latency spectrum (x values are percentiles).
    Spectrum,
    /// Logarithmic (latencies spanning decades).
    Log,
}

/// Parses `#rrggbb` (anything else is grey).
pub fn color(hex: &str) -> RGBColor {
    let h = hex.trim_start_matches('#');
    let byte = |i: usize| {
        h.get(i..i + 2)
            .and_then(|s| u8::from_str_radix(s, 16).ok())
            .unwrap_or(128)
    };
    if h.len() == 6 {
        RGBColor(byte(0), byte(2), byte(4))
    } else {
        RGBColor(128, 128, 128)
    }
}

/// A palette of distinguishable colours (Tableau 10).
pub const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// X position of percentile `p` on the spectrum axis: log10(1 / (1 - p/100)).
pub fn spectrum_x(p: f64) -> f64 {
    let q = (1.0 - p / 100.0).max(1e-7);
    (1.0 / q).log10()
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e:?}")
}

/// A round upper bound for an axis (1, 2, 2.5, 5 × 10^n).
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Short tick text.
pub fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn finite(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + '_ {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// A line chart, one polyline per series with points, legend at the upper left.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    axis: XAxis,
) -> anyhow::Result<String> {
    let xf = |x: f64| {
        if axis == XAxis::Spectrum {
            spectrum_x(x)
        } else {
            x
        }
    };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| finite(&s.points).map(|(x, y)| (xf(x), y)))
        .filter(|&(x, _)| axis != XAxis::Log || x > 0.0)
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(f64::MIN, f64::max);
    let ymax = nice_max(pts.iter().map(|p| p.1).fold(0.0, f64::max));
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (800, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60);
        match axis {
            XAxis::Log => {
                let xmin = pts.iter().map(|p| p.0).fold(f64::MAX, f64::min);
                let (lo, hi) = if pts.is_empty() {
                    (0.01, 1.0)
                } else {
                    (xmin * 0.9, (xmax * 1.1).max(xmin * 1.2))
                };
                let mut chart = builder
                    .build_cartesian_2d((lo..hi).log_scale(), 0f64..ymax)
                    .map_err(err)?;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .x_label_formatter(&|v| short(*v))
                    .y_label_formatter(&|v| short(*v))
                    .draw()
                    .map_err(err)?;
                for s in series {
                    let c = color(s.color);
                    chart
                        .draw_series(LineSeries::new(
                            finite(&s.points).filter(|p| p.0 > 0.0),
                            c.stroke_width(2),
                        ))
                        .map_err(err)?
                        .label(s.name)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                        });
                }
                legend(&mut chart)?;
            }
            XAxis::Linear | XAxis::Spectrum => {
                let xmin = if axis == XAxis::Spectrum {
                    0.0
                } else {
                    pts.iter().map(|p| p.0).fold(0.0, f64::min)
                };
                let xmax = if pts.is_empty() {
                    1.0
                } else {
                    xmax.max(xmin + 1e-9)
                };
                let mut chart = builder
                    .build_cartesian_2d(xmin..xmax, 0f64..ymax)
                    .map_err(err)?;
                let spectrum_label = |v: &f64| {
                    // Ticks at 0, 90, 99, 99.9 ...: x = 0, 1, 2, 3.
                    if (v - v.round()).abs() < 1e-6 {
                        let n = v.round() as i32;
                        if n == 0 {
                            "0%".to_string()
                        } else {
                            let p = 100.0 * (1.0 - 10f64.powi(-n));
                            format!("{}%", short_pct(p))
                        }
                    } else {
                        String::new()
                    }
                };
                let mut mesh = chart.configure_mesh();
                mesh.x_desc(x_label)
                    .y_desc(y_label)
                    .y_label_formatter(&|v| short(*v));
                if axis == XAxis::Spectrum {
                    mesh.x_labels((xmax.ceil() as usize + 1).max(2))
                        .x_label_formatter(&spectrum_label);
                } else {
                    mesh.x_label_formatter(&|v| short(*v));
                }
                mesh.draw().map_err(err)?;
                for s in series {
                    let c = color(s.color);
                    chart
                        .draw_series(LineSeries::new(
                            finite(&s.points).map(|(x, y)| (xf(x), y)),
                            c.stroke_width(2),
                        ))
                        .map_err(err)?
                        .label(s.name)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                        });
                }
                legend(&mut chart)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(buf)
}

fn short_pct(p: f64) -> String {
    let s = format!("{p:.5}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> anyhow::Result<()>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(err)
}

/// A group of points of a scatter chart (one legend entry).
pub struct ScatterGroup {
    /// Legend.
    pub name: String,
    /// Colour, `#rrggbb`.
    pub color: String,
    /// Points: x, y, label written beside the point.
    pub points: Vec<(f64, f64, String)>,
}

/// A scatter chart with a logarithmic x axis (latencies) and labelled points.
pub fn scatter_log_x(
    title: &str,
    x_label: &str,
    y_label: &str,
    groups: &[ScatterGroup],
) -> anyhow::Result<String> {
    let pts: Vec<(f64, f64)> = groups
        .iter()
        .flat_map(|g| g.points.iter().map(|p| (p.0, p.1)))
        .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0)
        .collect();
    let (lo, hi) = if pts.is_empty() {
        (0.01, 1.0)
    } else {
        let xmin = pts.iter().map(|p| p.0).fold(f64::MAX, f64::min);
        let xmax = pts.iter().map(|p| p.0).fold(f64::MIN, f64::max);
        (xmin * 0.7, (xmax * 1.5).max(xmin * 1.2))
    };
    let ymax = nice_max(pts.iter().map(|p| p.1).fold(0.0, f64::max) * 1.05);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .draw()
            .map_err(err)?;
        for g in groups {
            let c = color(&g.color);
            let points: Vec<(f64, f64, String)> = g
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite() && p.0 > 0.0)
                .cloned()
                .collect();
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|(x, y, _)| Circle::new((*x, *y), 5, c.filled())),
                )
                .map_err(err)?
                .label(g.name.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
            chart
                .draw_series(points.iter().map(|(x, y, l)| {
                    Text::new(l.clone(), (*x, *y), ("sans-serif", 10).into_font())
                }))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}

/// A heat map: `values[row][col]` (None: no result, drawn grey with "-"), each cell coloured by
/// its value relative to the largest (or, with `lower_is_better`, the smallest) and labelled
/// with it.
pub fn heatmap(
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<Option<f64>>],
    lower_is_better: bool,
) -> anyhow::Result<String> {
    let nr = rows.len().max(1);
    let nc = cols.len().max(1);
    let all: Vec<f64> = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let lo = all.iter().copied().fold(f64::MAX, f64::min);
    let hi = all.iter().copied().fold(f64::MIN, f64::max);
    let label_w = rows.iter().map(|r| r.len()).max().unwrap_or(4) as u32 * 7 + 20;
    let (w, h) = (label_w + 150 * nc as u32 + 40, 90 + 40 * nr as u32);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(label_w)
            .build_cartesian_2d(0f64..nc as f64, 0f64..nr as f64)
            .map_err(err)?;
        let col_name = |v: &f64| {
            let i = v.floor() as usize;
            if (v - v.floor() - 0.5).abs() < 1e-6 {
                cols.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        // Row 0 at the top.
        let row_name = |v: &f64| {
            let i = v.floor() as usize;
            if (v - v.floor() - 0.5).abs() < 1e-6 && i < nr {
                rows.get(nr - 1 - i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(2 * nc + 1)
            .y_labels(2 * nr + 1)
            .x_label_formatter(&col_name)
            .y_label_formatter(&row_name)
            .draw()
            .map_err(err)?;
        let mut cells = Vec::new();
        let mut texts = Vec::new();
        for (r, row) in values.iter().enumerate().take(nr) {
            let y0 = (nr - 1 - r) as f64;
            for (c, v) in row.iter().enumerate().take(nc) {
                let x0 = c as f64;
                let (fill, text) = match v {
                    Some(v) if v.is_finite() => {
                        let mut t = if hi > lo { (v - lo) / (hi - lo) } else { 1.0 };
                        if lower_is_better {
                            t = 1.0 - t;
                        }
                        let t = t.clamp(0.0, 1.0);
                        let shade = RGBColor(
                            (247.0 - 200.0 * t) as u8,
                            (251.0 - 120.0 * t) as u8,
                            (255.0 - 60.0 * t) as u8,
                        );
                        (shade, short(*v))
                    }
                    _ => (RGBColor(220, 220, 220), "-".to_string()),
                };
                cells.push(Rectangle::new(
                    [(x0 + 0.02, y0 + 0.04), (x0 + 0.98, y0 + 0.96)],
                    fill.filled(),
                ));
                texts.push(Text::new(
                    text,
                    (x0 + 0.42, y0 + 0.6),
                    ("sans-serif", 13).into_font(),
                ));
            }
        }
        chart.draw_series(cells).map_err(err)?;
        chart.draw_series(texts).map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(svg: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(svg).expect("SVG is well-formed XML")
    }

    fn count(doc: &roxmltree::Document, tag: &str) -> usize {
        doc.descendants().filter(|n| n.has_tag_name(tag)).count()
    }

    /// Series lines: polylines drawn 2 px wide (axes and ticks are 1 px, legend samples 3 px).
    fn series_lines(doc: &roxmltree::Document) -> usize {
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
            .count()
    }

    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_string()))
            .collect()
    }

    #[test]
    fn line_chart_has_one_polyline_per_series() {
        let svg = line_chart(
            "t <1>",
            "x",
            "y",
            &[
                Series {
                    name: "a",
                    color: "#ff0000",
                    points: vec![(0.0, 1.0), (99.0, 5.0), (99.99, 9.0)],
                },
                Series {
                    name: "b",
                    color: "#0000ff",
                    points: vec![(0.0, 2.0), (99.9, 3.0)],
                },
            ],
            XAxis::Spectrum,
        )
        .expect("svg");
        let doc = parse(&svg);
        assert_eq!(series_lines(&doc), 2);
        let t = texts(&doc);
        assert!(t.iter().any(|s| s == "t <1>"), "{t:?}");
        assert!(t.iter().any(|s| s == "a") && t.iter().any(|s| s == "b"));
        assert!(t.iter().any(|s| s == "99%"), "{t:?}");
        assert!((spectrum_x(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(color("#102030"), RGBColor(16, 32, 48));
    }

    #[test]
    fn empty_and_log_charts_draw() {
        let svg = line_chart("e", "x", "y", &[], XAxis::Linear).expect("svg");
        parse(&svg);
        let svg = line_chart(
            "l",
            "ms",
            "%",
            &[Series {
                name: "x",
                color: "#000000",
                points: vec![(0.5, 10.0), (5.0, 90.0), (50.0, 100.0)],
            }],
            XAxis::Log,
        )
        .expect("svg");
        assert_eq!(series_lines(&parse(&svg)), 1);
    }

    #[test]
    fn heatmap_labels_every_cell() {
        let svg = heatmap(
            "h",
            &["r0".into(), "r1".into()],
            &["c0".into(), "c1".into(), "c2".into()],
            &[
                vec![Some(1.0), Some(2.0), None],
                vec![Some(3.0), Some(4.5), Some(6.0)],
            ],
            false,
        )
        .expect("svg");
        let doc = parse(&svg);
        let t = texts(&doc);
        for want in ["r0", "r1", "c0", "c2", "4.5", "-", "6.0"] {
            assert!(t.iter().any(|s| s == want), "{want} in {t:?}");
        }
        assert!(count(&doc, "rect") >= 6);
    }
}
