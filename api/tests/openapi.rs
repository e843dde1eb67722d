//! The committed OpenAPI document (`openapi/openapi.json`) is the one the
//! code generates. Regenerate it with
//! `COFRE_WRITE_OPENAPI=1 cargo test -p cofre-api --test openapi`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    let generated = cofre_api::openapi().to_pretty_json().unwrap() + "\n";
    if std::env::var_os("COFRE_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).expect("openapi/openapi.json is committed");
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date: run COFRE_WRITE_OPENAPI=1 cargo test -p cofre-api --test openapi"
    );
    // Every route and every error schema is in it.
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/session",
        "/v1/folders",
        "/v1/folders/{folder}",
        "/v1/folders/{folder}/messages",
        "/v1/messages/search",
        "/v1/messages/{id}",
        "/v1/messages/{id}/raw",
        "/v1/messages/keywords",
        "/v1/messages/move",
        "/v1/messages/copy",
        "/v1/messages/delete",
        "/v1/quota",
        "/v1/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

#[test]
fn the_application_builds_its_routes() {
    // Building the router panics on overlapping routes: catch that here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store =
            cofre_storage::Store::open(tmp.path(), cofre_storage::StoreConfig::default()).unwrap();
        let primary = std::sync::Arc::new(cofre_storage::primary::Primary::new(
            std::sync::Arc::new(store),
            Default::default(),
        ));
        let router = cofre_storage::link::route::Router::new(vec![(
            "p".into(),
            cofre_storage::link::route::Link::Local(primary),
        )]);
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let state =
            cofre_api::AppState::new(router, None, b"0123456789abcdef", Default::default(), rx);
        let _ = cofre_api::app(state);
    });
}
