//! Nagios plugin performance data, the one parser of it in the attendant.
//!
//! Grammar (Monitoring Plugins development guidelines, "Performance data"):
//! `'label'=value[UOM];[warn];[crit];[min];[max]`, items separated by spaces.
//! - A label with spaces or `=` is single-quoted; a quote inside it is written twice
//!   (`'it''s'`). An empty label is not a metric.
//! - `value` is a number, or `U` when the plugin could not determine it: the metric is kept
//!   (label, thresholds) with `value: null` and `unknown: true`.
//! - Numbers may carry a decimal comma (`0,012947`, printed by plugins under a European
//!   locale): it is read as a decimal point, never as the end of the number.
//! - UOM is what follows the number: `s ms us % B KB MB GB TB c` (others are kept as written).
//! - `warn` and `crit` are ranges, `[@]start:end` ([`Range`]); a plain number `N` (`0:N`)
//!   stays a number in the JSON, anything else is kept as text (decimal point normalized)
//!   with its meaning beside it in `warn_range` / `crit_range`.
//! - An item that does not follow the grammar is kept as `{"raw": ITEM, "error": WHY}`, so
//!   nothing a plugin said is lost and nothing is silently misread.

use serde_json::{json, Map, Value};

/// One metric of a perfdata string.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub label: String,
    /// `None`: the plugin printed `U` (value unknown).
    pub value: Option<f64>,
    /// Unit of measure as written (`"s"`, `"%"`, `"MB"`, `"c"`, or `""`).
    pub uom: String,
    /// Each threshold as written (decimal point normalized) and what it means.
    pub warn: Option<(String, Range)>,
    pub crit: Option<(String, Range)>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

pub use crate::nagios_range::Range;

/// A range as `details.perfdata[].warn_range` / `crit_range` carry it.
fn range_json(r: &Range) -> Value {
    let mut m = Map::new();
    if let Some(a) = r.start() {
        m.insert("start".into(), num(a));
    }
    if let Some(b) = r.end() {
        m.insert("end".into(), num(b));
    }
    m.insert("inside".into(), json!(r.inside()));
    Value::Object(m)
}

impl Metric {
    /// The metric as the compilation carries it in `details.perfdata[]`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("label".into(), json!(self.label));
        match self.value {
            Some(v) => m.insert("value".into(), num(v)),
            None => {
                m.insert("unknown".into(), json!(true));
                m.insert("value".into(), Value::Null)
            }
        };
        if !self.uom.is_empty() {
            m.insert("uom".into(), json!(self.uom));
        }
        for (key, t) in [("warn", &self.warn), ("crit", &self.crit)] {
            if let Some((text, range)) = t {
                let plain = !range.inside() && range.start() == Some(0.0) && !text.contains(':');
                m.insert(key.into(), if plain { range.end().map_or(Value::Null, num) } else { json!(text) });
                if !plain {
                    m.insert(format!("{key}_range"), range_json(range));
                }
            }
        }
        for (key, v) in [("min", self.min), ("max", self.max)] {
            if let Some(v) = v {
                m.insert(key.into(), num(v));
            }
        }
        Value::Object(m)
    }
}

/// Parses a perfdata string into one JSON object per item, keeping their order (see the
/// module rules; items that do not parse are kept as `raw` with the `error`).
pub fn parse_perfdata(s: &str) -> Vec<Value> {
    parse(s)
        .into_iter()
        .map(|item| match item {
            Ok(m) => m.to_json(),
            Err((raw, error)) => json!({ "raw": raw, "error": error }),
        })
        .collect()
}

/// Parses a perfdata string: each item a [`Metric`] or, when it breaks the grammar, the
/// item as written and why.
pub fn parse(s: &str) -> Vec<Result<Metric, (String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let (item, after) = next_item(rest);
        out.push(parse_item(item).map_err(|e| (item.to_string(), e)));
        rest = after.trim_start();
    }
    out
}

/// The first item of `s` (which starts with no space) and what follows it: up to the first
/// whitespace outside a quoted label.
fn next_item(s: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted, // `''` inside a label toggles twice
            c if c.is_whitespace() && !quoted => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

fn parse_item(item: &str) -> Result<Metric, String> {
    let (label, rest) = label(item)?;
    if label.is_empty() {
        return Err("empty label".into());
    }
    let mut fields = rest.split(';');
    let value_uom = fields.next().unwrap_or("");
    let (value, uom) = if let Some(uom) = value_uom.strip_prefix('U') {
        (None, uom)
    } else {
        let end = number_end(value_uom);
        if end == 0 {
            return Err(format!("value {value_uom:?} is not a number"));
        }
        let v = number(&value_uom[..end]).ok_or_else(|| format!("value {value_uom:?} is not a number"))?;
        (Some(v), &value_uom[end..])
    };
    if uom.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '.' | ',')) {
        return Err(format!("value {value_uom:?} is not a number"));
    }
    let mut threshold = |name: &str| -> Result<Option<(String, Range)>, String> {
        match fields.next().map(str::trim) {
            None | Some("") => Ok(None),
            Some(t) => {
                let r = t.parse::<Range>().map_err(|e| format!("{name}: {e}"))?;
                Ok(Some((t.replace(',', "."), r)))
            }
        }
    };
    let warn = threshold("warn")?;
    let crit = threshold("crit")?;
    let mut bound = |name: &str| -> Result<Option<f64>, String> {
        match fields.next().map(str::trim) {
            None | Some("") => Ok(None),
            Some(t) => {
                // A UOM repeated after min/max (`0MB`) is tolerated, as Nagios does.
                let end = number_end(t);
                number(&t[..end]).map(Some).ok_or_else(|| format!("{name} {t:?} is not a number"))
            }
        }
    };
    let min = bound("min")?;
    let max = bound("max")?;
    Ok(Metric { label, value, uom: uom.to_string(), warn, crit, min, max })
}

/// The label (unquoted, `''` made `'`) and the text after its `=`.
fn label(item: &str) -> Result<(String, &str), String> {
    if let Some(body) = item.strip_prefix('\'') {
        let mut label = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '\'' {
                label.push(c);
                continue;
            }
            if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                chars.next();
                label.push('\'');
                continue;
            }
            let after = &body[i + 1..];
            return after.strip_prefix('=').map(|r| (label, r)).ok_or_else(|| "no '=' after the quoted label".into());
        }
        Err("the label's quote is not closed".into())
    } else {
        let (label, rest) = item.split_once('=').ok_or("no '=' (label=value)")?;
        Ok((label.to_string(), rest))
    }
}

/// Length of the number at the start of `s`: sign, digits, one decimal point or comma,
/// digits, and an exponent only when digits follow it (so a UOM is never eaten).
fn number_end(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    let mut any = digits(&mut i);
    if matches!(b.get(i), Some(b'.' | b',')) {
        let mut j = i + 1;
        if digits(&mut j) || any {
            any = true;
            i = j;
        }
    }
    if !any {
        return 0;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        if digits(&mut j) {
            i = j;
        }
    }
    i
}

/// A whole string as a number, a decimal comma read as a point.
fn number(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() || number_end(s) != s.len() {
        return None;
    }
    s.replace(',', ".").parse::<f64>().ok().filter(|f| f.is_finite())
}

fn num(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real plugins' perfdata (Monitoring Plugins, NSClient++, a plugin under a German
    /// locale) and what each first metric must read as.
    #[test]
    fn real_plugins_outputs() {
        let table: &[(&str, &str, Value)] = &[
            (
                "check_ping",
                "rta=0.050000ms;100.000000;500.000000;0.000000 pl=0%;20;60;0",
                json!({"label":"rta","value":0.05,"uom":"ms","warn":100.0,"crit":500.0,"min":0.0}),
            ),
            (
                "check_ping, host down",
                "rta=U;3000;5000;; pl=100%;80;100;0",
                json!({"label":"rta","value":null,"unknown":true,"warn":3000.0,"crit":5000.0}),
            ),
            (
                "check_disk",
                "/=2643MB;5948;6291;0;6622 /boot=32MB;95;100;0;101",
                json!({"label":"/","value":2643.0,"uom":"MB","warn":5948.0,"crit":6291.0,"min":0.0,"max":6622.0}),
            ),
            (
                "check_disk, quoted mount",
                "'/srv/my data'=12GB;80;90;0;100",
                json!({"label":"/srv/my data","value":12.0,"uom":"GB","warn":80.0,"crit":90.0,"min":0.0,"max":100.0}),
            ),
            (
                "check_http",
                "time=0.052091s;;;0.000000;10.000000 size=10975B;;;0",
                json!({"label":"time","value":0.052091,"uom":"s","min":0.0,"max":10.0}),
            ),
            (
                "check_http under a German locale",
                "time=0,012947s;;;0,000000;10,000000 size=10975B;;;0",
                json!({"label":"time","value":0.012947,"uom":"s","min":0.0,"max":10.0}),
            ),
            (
                "check_load",
                "load1=0.060;15.000;30.000;0; load5=0.080;10.000;25.000;0; load15=0.050;5.000;20.000;0;",
                json!({"label":"load1","value":0.06,"warn":15.0,"crit":30.0,"min":0.0}),
            ),
            (
                "check_procs",
                "procs=120;250;400;0;",
                json!({"label":"procs","value":120.0,"warn":250.0,"crit":400.0,"min":0.0}),
            ),
            (
                "check_swap",
                "swap=2147479552B;0;0;0;2147479552",
                json!({"label":"swap","value":2147479552.0,"uom":"B","warn":0.0,"crit":0.0,"min":0.0,"max":2147479552.0}),
            ),
            ("check_users", "users=2;5;10;0", json!({"label":"users","value":2.0,"warn":5.0,"crit":10.0,"min":0.0})),
            (
                "NSClient++ check_drivesize",
                "'C:\\ used'=21.5GB;31.9;35.9;0;39.9 'C:\\ used %'=53%;79;89;0;100",
                json!({"label":"C:\\ used","value":21.5,"uom":"GB","warn":31.9,"crit":35.9,"min":0.0,"max":39.9}),
            ),
            (
                "check_snmp with ranges",
                "'iso.3.6.1.2.1.1.3.0'=5;@10:20;~:5",
                json!({"label":"iso.3.6.1.2.1.1.3.0","value":5.0,
                       "warn":"@10:20","warn_range":{"start":10.0,"end":20.0,"inside":true},
                       "crit":"~:5","crit_range":{"end":5.0,"inside":false}}),
            ),
            ("a counter", "packets_in=123456c", json!({"label":"packets_in","value":123456.0,"uom":"c"})),
            ("microseconds", "lag=-12.5us;;", json!({"label":"lag","value":-12.5,"uom":"us"})),
            ("a quote in a label", "'it''s=odd'=1", json!({"label":"it's=odd","value":1.0})),
        ];
        for (plugin, perf, want) in table {
            let got = parse_perfdata(perf);
            assert_eq!(&got[0], want, "{plugin}: {perf}");
            assert!(got.iter().all(|m| m.get("raw").is_none()), "{plugin}: {got:?}");
        }
        assert_eq!(parse_perfdata("rta=U;3000;5000;; pl=100%;80;100;0")[1]["value"], 100.0);
        assert_eq!(parse_perfdata("'C:\\ used'=21.5GB;31.9 'C:\\ used %'=53%;79")[1]["label"], "C:\\ used %");
    }

    #[test]
    fn what_breaks_the_grammar_is_kept_raw_with_the_reason() {
        let p = parse_perfdata("nonsense time=fast 'open=1 =5 ok=1");
        assert_eq!(p[0], json!({"raw":"nonsense","error":"no '=' (label=value)"}));
        assert_eq!(p[1]["raw"], "time=fast");
        assert!(p[1]["error"].as_str().unwrap().contains("not a number"));
        // An unclosed quote swallows the rest: one raw item, not a misread label.
        assert_eq!(p[2]["raw"], "'open=1 =5 ok=1");
        assert_eq!(p.len(), 3);
        let p = parse_perfdata("a=1;5:2 b=1.2.3");
        assert!(p[0]["error"].as_str().unwrap().contains("its start is above its end"), "{p:?}");
        assert!(p[1]["error"].as_str().unwrap().contains("not a number"), "{p:?}");
    }

    #[test]
    fn ranges_alert_as_the_guidelines_say() {
        let cases = [
            ("10", [(-1.0, true), (0.0, false), (10.0, false), (10.5, true)]),
            ("10:", [(9.9, true), (10.0, false), (1e9, false), (-5.0, true)]),
            ("~:10", [(-1e9, false), (10.0, false), (10.1, true), (0.0, false)]),
            ("10:20", [(9.0, true), (10.0, false), (20.0, false), (21.0, true)]),
            ("@10:20", [(9.0, false), (10.0, true), (20.0, true), (21.0, false)]),
            ("0,5:1,5", [(0.4, true), (0.5, false), (1.5, false), (1.6, true)]),
        ];
        for (text, points) in cases {
            let r = text.parse::<Range>().unwrap();
            for (v, alert) in points {
                assert_eq!(r.alerts(v), alert, "{text} at {v}");
            }
        }
        assert!("abc".parse::<Range>().is_err());
        assert!("20:10".parse::<Range>().is_err());
    }
}
