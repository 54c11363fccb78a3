//! `kind = "command"`: a program printing Nagios plugin output; every performance-data
//! label (after `|`, on the first line or in the long output) becomes a figure, the text
//! before the `|` its message. Performance data is read by the checks' one parser
//! (`checks::perfdata`).
//!
//! Rules: plugin exit codes 0 to 3 all carry figures (the figure is what counts here, the
//! plugin's own verdict is not a usage figure); another code or no performance data at
//! all is a failed measurement naming the cause.

use super::{run, Figure};
use crate::checks::perfdata::parse_perfdata;

pub async fn measure(argv: &[String]) -> Result<Vec<Figure>, String> {
    let program = argv.first().map_or("", String::as_str);
    let out = run::run(argv).await?;
    if !matches!(out.code, Some(0..=3)) {
        return Err(out.failure(program));
    }
    figures(&out.stdout).ok_or_else(|| {
        let first = out.stdout.lines().next().unwrap_or("").trim();
        format!("{program} printed no performance data (LABEL=VALUE after '|'): {first:?}")
    })
}

/// The figures of plugin output `text`; `None` when it has no performance data.
fn figures(text: &str) -> Option<Vec<Figure>> {
    let mut lines = text.lines();
    let first = lines.next()?;
    let (message, first_perf) = first.split_once('|').unwrap_or((first, ""));
    // Long output: performance data may continue after a '|' on a later line.
    let mut perf = first_perf.to_string();
    for line in lines {
        if let Some((_, more)) = line.split_once('|') {
            perf.push(' ');
            perf.push_str(more);
        }
    }
    let figures: Vec<Figure> = parse_perfdata(&perf)
        .iter()
        .filter_map(|p| {
            let label = p.get("label")?.as_str()?.to_string();
            Some(Figure {
                label: Some(label),
                value: p.get("value").and_then(|v| v.as_f64()),
                unit: p.get("uom").and_then(|u| u.as_str()).unwrap_or("").to_string(),
                message: message.trim().to_string(),
            })
        })
        .collect();
    (!figures.is_empty()).then_some(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_a_figure_with_the_plugin_s_text() {
        let f = figures("LICENSES OK - 3 of 10 in use | used=3;8;9;0;10 'free seats'=7\nlong text\n| queue=12s;;\n")
            .expect("figures");
        let got: Vec<_> = f.iter().map(|f| (f.label.as_deref().unwrap_or(""), f.value, f.unit.as_str())).collect();
        assert_eq!(got, [("used", Some(3.0), ""), ("free seats", Some(7.0), ""), ("queue", Some(12.0), "s")]);
        assert_eq!(f[0].message, "LICENSES OK - 3 of 10 in use");
        assert!(figures("OK - nothing to measure\n").is_none());
        assert!(figures("").is_none());
    }
}
