//! The self-contained HTML report: the tables, latency CDFs (TTFT, TPOT, ITL, end-to-end) per
//! run, throughput and latency versus concurrency, failures, and every request in a collapsed
//! table. Charts are inline SVG drawn here; the only script switches between CDFs. Nothing is
//! loaded from the network, so the file can be mailed or archived as is.

use std::fmt::Write;

use crate::driver::RunResult;
use crate::markdown;
use crate::results::BenchReport;

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const W: f64 = 640.0;
const H: f64 = 340.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 46.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn run_name(run: &RunResult) -> String {
    let c = run
        .spec
        .max_concurrency
        .map_or("inf".into(), |c| c.to_string());
    match run.spec.request_rate {
        Some(r) => format!("concurrency {c}, {r} req/s"),
        None => format!("concurrency {c}"),
    }
}

/// Round tick positions covering `[lo, hi]`, about `n` of them.
fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = mag
        * if norm < 1.5 {
            1.0
        } else if norm < 3.0 {
            2.0
        } else if norm < 7.0 {
            5.0
        } else {
            10.0
        };
    let first = (lo / step).floor();
    let mut ticks = vec![first * step];
    let mut k = first;
    while *ticks.last().expect("never empty") < hi - step * 1e-9 {
        k += 1.0;
        ticks.push(k * step);
    }
    ticks
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A line chart. With `categories`, x values are indices into it, drawn evenly spaced.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    categories: Option<&[String]>,
    y_unit_range: bool,
) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max);
    let y_max = if y_unit_range {
        1.0
    } else {
        all.map(|p| p.1).fold(0.0, f64::max)
    };
    let (x_ticks, x_hi) = match categories {
        Some(c) => {
            let n = c.len().max(1) as f64;
            ((0..c.len()).map(|i| i as f64).collect::<Vec<_>>(), n - 1.0)
        }
        None => {
            let t = nice_ticks(0.0, x_max, 6);
            let hi = *t.last().unwrap_or(&1.0);
            (t, hi)
        }
    };
    let y_ticks = if y_unit_range {
        vec![0.0, 0.25, 0.5, 0.75, 0.9, 1.0]
    } else {
        nice_ticks(0.0, y_max, 5)
    };
    let y_hi = y_ticks.last().copied().unwrap_or(1.0).max(1e-9);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let (x_pad, x_span) = match categories {
        Some(_) => (0.5, x_hi + 1.0),
        None => (0.0, x_hi.max(1e-9)),
    };
    let sx = |x: f64| LEFT + (x + x_pad) / x_span * pw;
    let sy = |y: f64| TOP + ph - y / y_hi * ph;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="16" font-size="13" font-weight="bold">{}</text>"#,
        LEFT,
        esc(title)
    );
    for &y in &y_ticks {
        let py = sy(y);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            py + 4.0,
            fmt_tick(y)
        );
    }
    for (i, &x) in x_ticks.iter().enumerate() {
        let px = sx(x);
        let label = match categories {
            Some(c) => c[i].clone(),
            None => fmt_tick(x),
        };
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 14.0,
            esc(&label)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        LEFT + pw / 2.0,
        H - 8.0,
        esc(x_label),
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (k, ser) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<String> = ser
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"><title>{}</title></polyline>"#,
            pts.join(" "),
            esc(&ser.name)
        );
        if categories.is_some() {
            for &(x, y) in &ser.points {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{}: {:.2}</title></circle>"#,
                    sx(x),
                    sy(y),
                    esc(&ser.name),
                    y
                );
            }
        }
        // CDFs climb from bottom left to top right: their legend goes bottom right.
        let ly = if y_unit_range {
            TOP + ph - 8.0 - 14.0 * (series.len() - 1 - k) as f64
        } else {
            TOP + 14.0 + 14.0 * k as f64
        };
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT - 14.0,
            ly - 4.0,
            W - RIGHT - 18.0,
            ly,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Step points of the empirical CDF of `values`.
fn cdf_points(values: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mut pts = Vec::with_capacity(2 * v.len() + 1);
    let mut prev = 0.0;
    if let Some(&first) = v.first() {
        pts.push((first, 0.0));
    }
    for (i, &x) in v.iter().enumerate() {
        let y = (i + 1) as f64 / n;
        pts.push((x, prev));
        pts.push((x, y));
        prev = y;
    }
    pts
}

type Metric = (&'static str, &'static str, fn(&RunResult) -> Vec<f64>);

const CDFS: &[Metric] = &[
    ("ttft", "Time to first token", |r| {
        ok(r).filter_map(|q| q.ttft_ms).collect()
    }),
    ("e2e", "End-to-end latency", |r| {
        ok(r).filter_map(|q| q.e2e_ms).collect()
    }),
    ("tpot", "Time per output token", |r| {
        ok(r).filter_map(|q| q.tpot_ms()).collect()
    }),
    ("itl", "Inter-token latency", |r| {
        ok(r).flat_map(|q| q.itl_ms()).collect()
    }),
    ("visible", "Time to first visible answer character", |r| {
        ok(r).filter_map(|q| q.first_visible_ms).collect()
    }),
];

fn ok(r: &RunResult) -> impl Iterator<Item = &crate::record::RequestRecord> {
    r.requests.iter().filter(|q| q.ok())
}

/// The cells of a Markdown table row; `\|` is a literal `|` inside a cell.
fn split_row(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().expect("never empty").push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().expect("never empty").push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

fn markdown_table_to_html(md: &str) -> String {
    let mut s = String::new();
    let mut in_table = false;
    for line in md.lines() {
        if line.starts_with('|') {
            if line.starts_with("|---") {
                continue;
            }
            let cells = split_row(line);
            if !in_table {
                s.push_str("<table><tr>");
                for c in &cells {
                    let _ = write!(s, "<th>{}</th>", esc(c));
                }
                s.push_str("</tr>");
                in_table = true;
            } else {
                s.push_str("<tr>");
                for c in &cells {
                    let _ = write!(s, "<td>{}</td>", esc(c));
                }
                s.push_str("</tr>");
            }
        } else {
            if in_table {
                s.push_str("</table>");
                in_table = false;
            }
            if !line.trim().is_empty() {
                let _ = write!(s, "<p>{}</p>", esc(line));
            }
        }
    }
    if in_table {
        s.push_str("</table>");
    }
    s
}

pub fn render(report: &BenchReport) -> String {
    let title = format!(
        "kestrel bench: {} {}",
        report.label.as_deref().unwrap_or(""),
        report.model
    );
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{}</title><style>
body{{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}}
table{{border-collapse:collapse;font-size:12px;margin:8px 0}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
th{{background:#f3f3f3}} .charts{{display:flex;flex-wrap:wrap;gap:12px}}
code{{background:#f3f3f3;padding:1px 3px}}
</style></head><body><h1>{}</h1>"#,
        esc(&title),
        esc(&title)
    );
    let _ = write!(
        s,
        "<p>Endpoint <code>{}</code> ({:?}), dataset <code>{}</code>, ignore_eos {}, started at Unix time {}.</p>",
        esc(&report.base_url),
        report.endpoint,
        esc(&report.dataset),
        report.ignore_eos,
        report.started_at_unix_s
    );
    if let Some(cmd) = &report.command {
        let _ = write!(s, "<p>Command: <code>{}</code></p>", esc(cmd));
    }
    s.push_str("<h2>Summary</h2>");
    s.push_str(&markdown_table_to_html(&markdown::render(report)));

    s.push_str("<h2>Latency CDF</h2><p>");
    for (i, (key, name, _)) in CDFS.iter().enumerate() {
        let _ = write!(
            s,
            r#"<label><input type="radio" name="cdf" value="{key}" {}> {name}</label> "#,
            if i == 0 { "checked" } else { "" }
        );
    }
    s.push_str("</p>");
    for (i, (key, name, values)) in CDFS.iter().enumerate() {
        let series: Vec<Series> = report
            .runs
            .iter()
            .map(|r| Series {
                name: run_name(r),
                points: cdf_points(&values(r)),
            })
            .collect();
        let _ = write!(
            s,
            r#"<div class="cdf" id="cdf-{key}" style="display:{}">{}</div>"#,
            if i == 0 { "block" } else { "none" },
            line_chart(name, "ms", "fraction of requests", &series, None, true)
        );
    }

    s.push_str("<h2>Throughput and latency versus concurrency</h2><div class=\"charts\">");
    let categories: Vec<String> = report
        .runs
        .iter()
        .map(|r| {
            r.spec
                .max_concurrency
                .map_or("inf".into(), |c| c.to_string())
        })
        .collect();
    let by_run = |f: fn(&RunResult) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| f(r).map(|y| (i as f64, y)))
            .collect()
    };
    let throughput = [Series {
        name: "output tok/s".into(),
        points: by_run(|r| Some(r.metrics.output_tok_per_s)),
    }];
    s.push_str(&line_chart(
        "Output throughput",
        "max concurrency",
        "tokens/s",
        &throughput,
        Some(&categories),
        false,
    ));
    let mut requests = vec![Series {
        name: "requests/s".into(),
        points: by_run(|r| Some(r.metrics.requests_per_s)),
    }];
    if report.slo.is_set() {
        requests.push(Series {
            name: "goodput (SLOs met)/s".into(),
            points: by_run(|r| r.metrics.goodput_req_per_s),
        });
    }
    s.push_str(&line_chart(
        "Request throughput",
        "max concurrency",
        "requests/s",
        &requests,
        Some(&categories),
        false,
    ));
    let latency = [
        Series {
            name: "TTFT p50".into(),
            points: by_run(|r| r.metrics.ttft_ms.p50),
        },
        Series {
            name: "TTFT p95".into(),
            points: by_run(|r| r.metrics.ttft_ms.p95),
        },
        Series {
            name: "E2E p50".into(),
            points: by_run(|r| r.metrics.e2e_ms.p50),
        },
    ];
    s.push_str(&line_chart(
        "Latency",
        "max concurrency",
        "ms",
        &latency,
        Some(&categories),
        false,
    ));
    s.push_str("</div>");

    s.push_str("<h2>Requests</h2>");
    for run in &report.runs {
        let _ = write!(
            s,
            "<details><summary>{} — {} requests</summary><table><tr><th>#</th><th>class</th><th>queue</th><th>TTFT</th><th>first reasoning</th><th>first visible</th><th>TPOT</th><th>E2E</th><th>tokens</th><th>source</th><th>finish</th><th>error</th></tr>",
            esc(&run_name(run)),
            run.requests.len()
        );
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        for q in &run.requests {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                q.index,
                esc(q.class.as_deref().unwrap_or("")),
                q.queue_ms(),
                f(q.ttft_ms),
                f(q.first_reasoning_ms),
                f(q.first_visible_ms),
                f(q.tpot_ms()),
                f(q.e2e_ms),
                q.output_tokens.map_or("-".into(), |n| n.to_string()),
                q.token_source
                    .map_or("-".into(), |t| format!("{t:?}").to_lowercase()),
                esc(q.finish_reason.as_deref().unwrap_or("")),
                esc(&match (&q.error, &q.error_message) {
                    (Some(k), Some(m)) => format!("{}: {m}", k.name()),
                    (Some(k), None) => k.name(),
                    _ => String::new(),
                }),
            );
        }
        s.push_str("</table></details>");
    }
    s.push_str(
        r#"<script>
for (const r of document.querySelectorAll('input[name=cdf]')) {
  r.addEventListener('change', () => {
    for (const d of document.querySelectorAll('.cdf')) d.style.display = 'none';
    document.getElementById('cdf-' + r.value).style.display = 'block';
  });
}
</script></body></html>
"#,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_the_range() {
        let t = nice_ticks(0.0, 87.0, 5);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().unwrap() >= 87.0);
        assert_eq!(nice_ticks(0.0, 0.0, 5).first(), Some(&0.0));
    }

    #[test]
    fn cdf_is_a_staircase_to_one() {
        let p = cdf_points(&[3.0, 1.0, 2.0]);
        assert_eq!(p.first(), Some(&(1.0, 0.0)));
        assert_eq!(p.last(), Some(&(3.0, 1.0)));
        assert!(p.windows(2).all(|w| w[1].0 >= w[0].0 && w[1].1 >= w[0].1));
    }

    #[test]
    fn table_rows_keep_escaped_pipes() {
        assert_eq!(split_row("| a\\|b | c |"), vec!["a|b", "c"]);
        let html = markdown_table_to_html("| h1 | h2 |\n|---|---|\n| x\\|y | 2 |\n");
        assert!(html.contains("<td>x|y</td><td>2</td>"), "{html}");
    }

    #[test]
    fn escapes() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
