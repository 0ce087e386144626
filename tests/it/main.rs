mod accounts;
mod console;
mod dashboards;
mod gateway;
mod harness;
mod messaging;
mod smoke;
mod webhooks;
