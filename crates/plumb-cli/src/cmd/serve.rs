//! `plumb serve`: the OpenAI-compatible HTTP server (in plumb-server) on the chosen backend.

use anyhow::Result;

use crate::common::DeviceArgs;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, \
GET /health, GET /metrics.\nExample: plumb serve --port 8080 --max-batch 16, then point any OpenAI \
client at http://127.0.0.1:8080/v1"
)]
pub struct Args {
    #[command(flatten)]
    server: plumb_server::cli::Args,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main(a: Args) -> Result<()> {
    let choice = a.device.choice()?;
    crate::common::with_backend!(&choice, |b| plumb_server::cli::main(a.server, b))
}
