//! The real [`Deliver`](super::Deliver): HTTP for the web services, SMTP
//! for e-mail.

pub mod smtp;
