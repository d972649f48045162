mod labelling;
mod numbers;
