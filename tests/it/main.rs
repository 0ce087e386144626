mod accounts;
mod gateway;
mod harness;
mod smoke;
