//! Compiles `proto/` with prost. `protox` parses the files in pure Rust, so
//! building cxpulse needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/cxpulse/v1/events.proto",
        "proto/cxpulse/v1/outputs.proto",
        "proto/cxpulse/state/v1/state.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let mut config = prost_build::Config::new();
    // Deterministic JSON: maps keep their keys sorted.
    config.btree_map(["."]);
    // Output messages are serialised to JSON with serde as well as to Protobuf.
    for message in [
        "Profile",
        "ProfileContext",
        "EnrichedEvent",
        "NpsResult",
        "CsatResult",
        "CesResult",
        "TicketsResult",
        "OrdersResult",
        "RetentionResult",
        "WindowResult",
        "Signal",
    ] {
        config.type_attribute(
            format!(".cxpulse.v1.{message}"),
            "#[derive(serde::Serialize, serde::Deserialize)]",
        );
    }
    // An enriched event shows only the fields of its own kind.
    for field in [
        "order_id",
        "ticket_id",
        "survey_id",
        "amount_minor",
        "currency",
        "channel",
        "score",
        "scale_max",
    ] {
        config.field_attribute(
            format!(".cxpulse.v1.EnrichedEvent.{field}"),
            "#[serde(skip_serializing_if = \"Option::is_none\", default)]",
        );
    }
    config.compile_fds(descriptors)?;
    Ok(())
}
