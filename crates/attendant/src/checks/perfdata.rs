//! Nagios plugin performance data: `'label'=value[UOM];[warn];[crit];[min];[max]`.

use serde_json::{json, Map, Value};

/// Parses a perfdata string into one object per metric, keeping their order. Items that do
/// not parse are kept under `raw` rather than dropped, so nothing a plugin said is lost.
pub fn parse_perfdata(s: &str) -> Vec<Value> {
    split_items(s).into_iter().map(|item| parse_item(&item).unwrap_or_else(|| json!({ "raw": item }))).collect()
}

/// Splits on whitespace, except inside single-quoted labels (`'disk usage'=5%`).
fn split_items(s: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    items.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        items.push(cur);
    }
    items
}

fn parse_item(item: &str) -> Option<Value> {
    let (label, rest) = item.rsplit_once('=')?;
    let label = label.trim_matches('\'').replace("''", "'");
    if label.is_empty() {
        return None;
    }
    let mut fields = rest.split(';');
    let value_uom = fields.next()?;
    let split = value_uom
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(value_uom.len());
    let (value, uom) = value_uom.split_at(split);
    let mut m = Map::new();
    m.insert("label".into(), json!(label));
    m.insert("value".into(), number(value)?);
    if !uom.is_empty() {
        m.insert("uom".into(), json!(uom));
    }
    for key in ["warn", "crit", "min", "max"] {
        match fields.next() {
            Some(f) if !f.is_empty() => {
                // Thresholds may be ranges (`10:20`, `@5:`); keep those as text.
                m.insert(key.into(), number(f).unwrap_or_else(|| json!(f)));
            }
            _ => {}
        }
    }
    Some(Value::Object(m))
}

fn number(s: &str) -> Option<Value> {
    let f: f64 = s.parse().ok()?;
    serde_json::Number::from_f64(f).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_units_and_thresholds() {
        let p = parse_perfdata("time=0.012s;1;2;0 'disk /var'=85%;80;90 size=1234B");
        assert_eq!(p[0], json!({"label":"time","value":0.012,"uom":"s","warn":1.0,"crit":2.0,"min":0.0}));
        assert_eq!(p[1], json!({"label":"disk /var","value":85.0,"uom":"%","warn":80.0,"crit":90.0}));
        assert_eq!(p[2]["uom"], "B");
    }

    #[test]
    fn ranges_stay_text_and_garbage_is_kept_raw() {
        let p = parse_perfdata("load=3;@5:10;20: nonsense");
        assert_eq!(p[0]["warn"], "@5:10");
        assert_eq!(p[0]["crit"], "20:");
        assert_eq!(p[1], json!({"raw":"nonsense"}));
    }
}
