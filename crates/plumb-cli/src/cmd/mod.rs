pub mod chat;
pub mod check;
pub mod inspect;
pub mod perplexity;
pub mod run;
pub mod tokenize;
