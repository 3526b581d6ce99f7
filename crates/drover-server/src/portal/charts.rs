//! The reports' charts, drawn as SVG by plotters (its SVG backend only: no font files, no
//! bitmaps) and put in the page inline.

use plotters::prelude::*;

const W: u32 = 640;
const H: u32 = 260;
const BLUE: RGBColor = RGBColor(11, 92, 173);
const RED: RGBColor = RGBColor(180, 35, 24);

fn finish(svg: String) -> String {
    // The SVG goes into the page as is; nothing in it comes from outside but escaped labels.
    svg.replacen("<svg ", "<svg role=\"img\" class=\"chart\" ", 1)
}

/// Bars: completed (and failed) deployments per day.
pub fn per_day(days: &[(String, u32, u32)], title: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let n = days.len().max(1);
        let top = days.iter().map(|d| d.1.max(d.2)).max().unwrap_or(0).max(1);
        let chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(36)
            .build_cartesian_2d((0..n).into_segmented(), 0u32..top + 1);
        let Ok(mut chart) = chart else { return String::new() };
        let labels: Vec<String> = days.iter().map(|d| d.0.get(5..).unwrap_or_default().to_string()).collect();
        let step = n.div_ceil(10).max(1);
        let _ = chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(10))
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) if i % step == 0 => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc("deployments")
            .draw();
        let _ = chart.draw_series(
            Histogram::vertical(&chart)
                .style(BLUE.filled())
                .margin(2)
                .data(days.iter().enumerate().map(|(i, d)| (i, d.1))),
        );
        let _ = chart.draw_series(
            Histogram::vertical(&chart)
                .style(RED.filled())
                .margin(6)
                .data(days.iter().enumerate().map(|(i, d)| (i, d.2))),
        );
        let _ = root.present();
    }
    finish(svg)
}

/// A line: one value (hours) per point, in order.
pub fn series(points: &[f64], title: &str, y: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let top = points.iter().copied().fold(0.0f64, f64::max).max(0.01) * 1.1;
        let chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(0..points.len().max(2), 0.0..top);
        let Ok(mut chart) = chart else { return String::new() };
        let _ = chart.configure_mesh().x_desc("deployment (oldest first)").y_desc(y).draw();
        let _ = chart.draw_series(LineSeries::new(points.iter().enumerate().map(|(i, v)| (i, *v)), &BLUE));
        let _ = chart.draw_series(points.iter().enumerate().map(|(i, v)| Circle::new((i, *v), 3, BLUE.filled())));
        let _ = root.present();
    }
    finish(svg)
}

/// Horizontal-ish bars: one value (minutes) per named item.
pub fn bars(items: &[(String, f64)], title: &str, y: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let n = items.len().max(1);
        let top = items.iter().map(|i| i.1).fold(0.0f64, f64::max).max(0.01) * 1.1;
        let chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d((0..n).into_segmented(), 0.0..top);
        let Ok(mut chart) = chart else { return String::new() };
        let names: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
        let _ = chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc(y)
            .draw();
        let _ = chart.draw_series(items.iter().enumerate().map(|(i, it)| {
            Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), it.1)], BLUE.filled())
        }));
        let _ = root.present();
    }
    finish(svg)
}

#[cfg(test)]
mod tests {
    #[test]
    fn charts_are_svg_without_inline_styles_or_scripts() {
        let svg = super::per_day(&[("2026-12-01".into(), 3, 1), ("2026-12-02".into(), 0, 0)], "Deployments per day");
        let line = super::series(&[1.0, 2.5, 0.5], "Lead time", "hours");
        let bars = super::bars(&[("dev".into(), 2.0), ("prod".into(), 5.0)], "Time per stage", "minutes");
        for s in [&svg, &line, &bars] {
            assert!(s.starts_with("<svg role=\"img\""), "{s}");
            assert!(!s.contains("style=") && !s.contains("<script"), "the CSP allows no inline style: {s}");
            assert!(s.contains("<rect") || s.contains("<polyline") || s.contains("<path"), "{s}");
        }
        assert!(svg.contains("Deployments per day"));
    }
}
