//! plumb-tokenizer
