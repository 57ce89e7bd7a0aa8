pub mod bench;
pub mod chat;
pub mod check;
pub mod inspect;
pub mod perplexity;
pub mod run;
pub mod synth;
pub mod tokenize;
