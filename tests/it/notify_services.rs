//! Notifications to the web services, checked against each service's
//! documented API through the loopback receiver (tests/common/receiver.rs),
//! the one stand-in allowed: none of the services can be reached from here.

use std::time::{Duration, Instant};

use crate::common::receiver::{Behaviour, Receiver};

const GUARD: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_receiver_records_each_request_whole_and_answers_as_told() {
    let receiver = Receiver::start(Behaviour::status(201).with_body("made"));
    let answer = client()
        .post(format!(
            "{}/bot1%3Aab/send?chat=%40ops&x=a+b",
            receiver.url()
        ))
        .header("X-Title", "Backup failed")
        .body(r#"{"text":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201);
    assert_eq!(answer.text().await.unwrap(), "made");

    let got = receiver.wait_for_requests(1, GUARD);
    let request = &got[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/bot1%3Aab/send");
    assert_eq!(request.query.as_deref(), Some("chat=%40ops&x=a+b"));
    assert_eq!(request.query_pairs()["chat"], "@ops");
    assert_eq!(request.query_pairs()["x"], "a b");
    assert_eq!(request.header("x-title"), Some("Backup failed"));
    assert_eq!(request.header("X-TITLE"), Some("Backup failed"));
    assert_eq!(request.json()["text"], "hello");
    assert_eq!(request.text(), r#"{"text":"hello"}"#);
    assert!(request.to_string().starts_with("POST /bot1%3Aab/send?chat"));

    // A second request on the same (pooled) connection, answered anew.
    receiver.set_behaviour(
        Behaviour::status(302).with_header("Location", "http://127.0.0.1:9/elsewhere"),
    );
    let answer = client().get(receiver.url()).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 302);
    assert_eq!(
        answer.headers()["location"].to_str().unwrap(),
        "http://127.0.0.1:9/elsewhere"
    );
    assert_eq!(receiver.requests().len(), 2);
    assert_eq!(receiver.requests()[1].method, "GET");
    assert!(receiver.requests()[1].body.is_empty());
    assert!(receiver.host_port().starts_with("127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_receiver_answers_late_or_never() {
    let receiver = Receiver::start(Behaviour::ok().after(Duration::from_millis(300)));
    let started = Instant::now();
    let answer = client().post(receiver.url()).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    receiver.set_behaviour(Behaviour::Hang);
    let hung = client()
        .post(receiver.url())
        .timeout(Duration::from_millis(500))
        .body("x")
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());
    // The hung request was recorded all the same.
    assert_eq!(receiver.wait_for_requests(2, GUARD)[1].body, b"x");

    // Dropping the receiver ends a hung connection: the client sees it closed.
    let pending = tokio::spawn(client().post(receiver.url()).send());
    receiver.wait_for_requests(3, GUARD);
    drop(receiver);
    let ended = tokio::time::timeout(GUARD, pending).await.unwrap().unwrap();
    assert!(ended.is_err());
}
