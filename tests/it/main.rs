mod accounts;
mod console;
mod gateway;
mod harness;
mod smoke;
