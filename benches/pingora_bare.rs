//! A Pingora proxy with nothing of ours: one worker thread, every request passed to one upstream
//! over a pooled HTTP/1.1 connection, no checks, no log. `benches/proxy.sh` runs it beside the
//! gateway so that each run shows which part of the gap to nginx is Pingora's own per-request
//! work and which part is the gateway's.
//!
//!   pingora_bare <listen addr> <upstream addr>
//!
//! Not a criterion bench (it serves until killed); it lives here so that it is built with the
//! release profile and never ships.

use async_trait::async_trait;
use pingora::{
    prelude::{HttpPeer, Opt, Result, Server},
    proxy::{http_proxy_service, ProxyHttp, Session},
    server::configuration::ServerConf,
};

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: pingora_bare <listen addr> <upstream addr>");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(Opt::default()), conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare { upstream });
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
