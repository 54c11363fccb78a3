//! Reliability suite, mutual TLS (SPEC sections 6 and 11; issue 12): a throwaway CA made
//! in the test (rcgen), a real attendant serving mutual TLS, a real poller polling it (and
//! sending it a clock order) over `https://`, and serving its own API over HTTPS.
//! Clients without a certificate, with one of another CA or an expired one are refused in
//! the handshake, before any request is read.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rollcall_testkit::pki::{Issued, Pki, Validity};
use rollcall_testkit::wait_until;
use serde_json::Value;

/// A client trusting `ca`, presenting `identity`.
fn client(ca: &Path, identity: Option<&Issued>) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut b = reqwest::Client::builder().add_root_certificate(root).timeout(Duration::from_secs(5));
    if let Some(id) = identity {
        let mut pem = std::fs::read(&id.cert_file).unwrap();
        pem.extend(std::fs::read(&id.key_file).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// `rollcall keygen`: (the private key file, the public key line).
async fn keygen(dir: &Path) -> (std::path::PathBuf, String) {
    let out = dir.join("keys");
    let (code, stdout, err) = run_cli(&["keygen", "--out", out.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "keygen failed: {err}");
    (out.join("poller.key"), stdout.trim().to_string())
}

/// Starts `rollcall WHAT --config FILE` and waits for `started` in its log.
async fn spawn(dir: &Path, what: &str, config: &Path, started: &str) -> Proc {
    let p = Proc::spawn(what, &[what, "--config", config.to_str().unwrap()], dir.join(format!("{what}.log")));
    p.wait_log(started).await;
    p
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    r.json::<Value>().await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_between_poller_and_attendant_and_https_for_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let site = Pki::new(d, "site");
    let other = Pki::new(d, "other");
    let _attendant_cert = site.issue("attendant", Validity::Current);
    let poller_cert = site.issue("poller", Validity::Current);
    let expired = site.issue("old", Validity::Expired);
    let stranger = other.issue("poller", Validity::Current);
    let _token = write(d, "token", "s3cret\n");
    let (key, public) = keygen(d).await;

    let att_port = free_port();
    let att_config = write(
        d,
        "attendant.toml",
        &format!(
            "name = \"mail-01\"\nlisten = \"127.0.0.1:{att_port}\"\ntoken_file = \"token\"\n\
             clock = \"virtual\"\nclock_offset = \"30s\"\npoller_public_key = \"{public}\"\n\
             tls_cert_file = \"site-attendant.pem\"\ntls_key_file = \"site-attendant.key\"\nclient_ca_file = \"site-ca.pem\"\n\
             [host]\ndisk_warning_percent = 100.0\ndisk_critical_percent = 100.0\n"
        ),
    );
    let att = spawn(d, "attendant", &att_config, "attendant started").await;
    let url = format!("https://127.0.0.1:{att_port}/v1/compilation");

    // A client of the site with the token is served.
    let r = client(&site.ca_file, Some(&poller_cert)).get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["attendant"]["name"], "mail-01");
    // Every other client is refused in the handshake: the attendant never reads a request
    // (it would log the missing token if it had).
    for (what, id) in [("no certificate", None), ("another CA's", Some(&stranger)), ("an expired", Some(&expired))] {
        let r = client(&site.ca_file, id).get(&url).send().await;
        assert!(r.is_err(), "a client with {what} certificate was served: {r:?}");
    }
    assert!(
        !att.log_text().contains("without a valid token"),
        "a refused client's request was read:\n{}",
        att.log_text()
    );

    // A poller with the site's keys polls it and corrects its clock over mutual TLS; one
    // trusting another CA, or presenting another CA's certificate, gets poll:tls.
    let api_port = free_port();
    let poller_config = write(
        d,
        "poller.toml",
        &format!(
            "listen = \"127.0.0.1:{api_port}\"\ndatabase = \"sqlite://{}\"\ntimeout = \"2s\"\n\
             signing_key_file = {:?}\nmax_clock_skew = \"2s\"\n\
             tls_ca_file = \"site-ca.pem\"\ntls_client_cert_file = \"site-poller.pem\"\ntls_client_key_file = \"site-poller.key\"\n\
             [api]\ntls_cert_file = \"site-attendant.pem\"\ntls_key_file = \"site-attendant.key\"\n\
             [[level]]\nname = \"normal\"\ninterval = \"3s\"\n[[level]]\nname = \"critical\"\ninterval = \"3s\"\n\
             [[server]]\nname = \"mtls\"\naddress = \"https://127.0.0.1:{att_port}\"\ntoken_file = \"token\"\n\
             [[server]]\nname = \"untrusted-attendant\"\naddress = \"https://127.0.0.1:{att_port}\"\ntoken_file = \"token\"\n\
             tls_ca_file = \"other-ca.pem\"\n\
             [[server]]\nname = \"refused-poller\"\naddress = \"https://127.0.0.1:{att_port}\"\ntoken_file = \"token\"\n\
             tls_client_cert_file = \"other-poller.pem\"\ntls_client_key_file = \"other-poller.key\"\n",
            d.join("rollcall.db").display(),
            key.display().to_string(),
        ),
    );
    let poller = spawn(d, "poller", &poller_config, "poller started").await;
    let api = client(&site.ca_file, None);
    let base = format!("https://127.0.0.1:{api_port}/api/v1/servers");
    let server = |name: &str| {
        let (api, url) = (api.clone(), format!("{base}/{name}"));
        move || {
            let (api, url) = (api.clone(), url.clone());
            async move { get_json(&api, &url).await }
        }
    };
    let s = wait_until("mtls polled over mutual TLS", DEADLINE, {
        let ask = server("mtls");
        move || {
            let ask = ask.clone();
            async move {
                let s = ask().await?;
                if s["state"] == "ok" {
                    Ok(s)
                } else {
                    Err(format!("{s:#}"))
                }
            }
        }
    })
    .await;
    assert_eq!(s["compilation"]["attendant"]["name"], "mail-01", "{s:#}");
    for name in ["untrusted-attendant", "refused-poller"] {
        let s = wait_until(&format!("{name} polled"), DEADLINE, {
            let ask = server(name);
            move || {
                let ask = ask.clone();
                async move {
                    let s = ask().await?;
                    if s["last_poll_at"].is_string() {
                        Ok(s)
                    } else {
                        Err(format!("{s:#}"))
                    }
                }
            }
        })
        .await;
        assert_eq!(sources(&s), ["poll:tls"], "{name}: {s:#}");
        println!("figure: {name}: poll:tls: {}", s["last_error"].as_str().unwrap_or(""));
    }
    let history = wait_until("a clock order applied over mutual TLS", DEADLINE, || {
        let (api, url) = (api.clone(), format!("{base}/mtls/history"));
        async move {
            let h = get_json(&api, &url).await?;
            let applied = h["clock_corrections"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["outcome"] == "applied" || c["outcome"] == "verified"));
            if applied {
                Ok(h)
            } else {
                Err(format!("{h:#}"))
            }
        }
    })
    .await;
    assert!(history["clock_corrections"].as_array().is_some_and(|c| !c.is_empty()));
    // The API refuses plain HTTP now: it speaks only TLS.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{api_port}/api/v1/servers")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "the API answered plain HTTP");
    for p in [&att, &poller] {
        assert!(!p.log_text().contains("panicked"), "{}", p.log_text());
    }
}
