//! docs/api.md against the OpenAPI document a running poller serves: every route (method
//! and path) of the one must be in the other, so the reference cannot drift from the code.
//! A route is documented in docs/api.md by a heading ``### `METHOD /path` ``.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{start_poller, PollerToml};

/// The routes docs/api.md documents: its ``### `METHOD /path` `` headings.
fn documented(doc: &str) -> BTreeSet<String> {
    doc.lines().filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`').map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_api_md_names_every_route_of_the_openapi_document_and_no_other() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let poller = start_poller(dir.path(), &PollerToml::fast(Vec::new())).await;
    let openapi = poller.api.get("/api/v1/openapi.json").await;
    let paths = openapi["paths"].as_object().expect("the document's paths");
    let mut served = BTreeSet::new();
    for (path, ops) in paths {
        for method in ops.as_object().expect("a path's operations").keys() {
            served.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(served.len() >= 5, "the document lists only {served:?}");

    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md");
    let doc = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let written = documented(&doc);
    let missing: Vec<_> = served.difference(&written).collect();
    let extra: Vec<_> = written.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{}: routes the poller serves but the page does not document (add a ### `METHOD /path` heading): \
         {missing:?}; routes the page documents but the poller does not serve: {extra:?}",
        file.display()
    );
}
