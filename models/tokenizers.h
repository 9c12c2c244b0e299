#pragma once
// Character-level tokenizers of the two sequence backbones, matching the Hugging Face tokenizers
// ModelGenerator calls (EsmTokenizer; RNABertTokenizer version "v2"):
//   ESM-2     33 tokens, <cls> seq <eos>, pad 1, <mask> 32, <unk> 3
//   AIDO.RNA  16 tokens, [CLS] seq [SEP], pad 0, [MASK] 1, [UNK] 4
// Every vocabulary entry is a "no-split" token, so a sequence splits into single letters and
// bracketed specials written in full ("AC<mask>D"). What matches nothing is, as in HF, a run of
// unknown characters between matches (whitespace separates runs and is otherwise dropped): each
// run becomes ONE <unk>/[UNK] when the caller allows unknowns, and is an error naming the
// sequence and character position otherwise.
//
// Truncation keeps the 5' / N-terminal end and counts the two special tokens against max_length
// (HF truncation=True); batches are right-padded to their longest member (padding=True).
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace strand::models {

struct TokenizeOptions {
  int64_t max_length = -1;     // tokens including specials; -1 = no truncation; must be >= 2 otherwise
  bool allow_unknown = false;  // map unknown characters to <unk>/[UNK] instead of failing
};

struct Encoding {
  Tensor input_ids;            // i64 [N, L]
  Tensor attention_mask;       // i64 [N, L]: 1 = token, 0 = padding
  Tensor special_tokens_mask;  // i64 [N, L]: 1 on the added <cls>/<eos> ([CLS]/[SEP]) and on padding, as HF
  std::vector<int64_t> lengths;  // tokens per sequence, specials included
};

class Tokenizer {
 public:
  // ESM-2's alphabet (fair-esm "ESM-1b" architecture = HF EsmTokenizer vocab.txt).
  static Tokenizer esm2();
  // AIDO.RNA's vocabulary in the v2 layout. dna_letters (the default) upper-cases the input and
  // turns U into T, as AIDO.RNA was pre-trained on DNA letters; false feeds the text unchanged,
  // which is what ModelGenerator's GenBioBERT does (byte-for-byte parity with its tokenizer).
  static Tokenizer aido_rna(bool dna_letters = true);

  const std::string& name() const { return name_; }
  const std::vector<std::string>& vocab() const { return vocab_; }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }
  int64_t token_id(const std::string& token) const;  // strand::Error for a token not in the vocabulary
  int64_t pad_id() const { return pad_; }
  int64_t cls_id() const { return cls_; }
  int64_t eos_id() const { return eos_; }
  int64_t unk_id() const { return unk_; }
  int64_t mask_id() const { return mask_; }
  bool dna_letters() const { return dna_letters_; }

  // Token ids of one sequence with the specials added and truncation applied. `index` only names
  // the sequence in error messages.
  std::vector<int64_t> encode(const std::string& seq, const TokenizeOptions& o = {}, int64_t index = 0) const;
  // A padded batch (N >= 1).
  Encoding batch(const std::vector<std::string>& seqs, const TokenizeOptions& o = {}) const;
  // Ids back to text (specials spelled out), for messages and tests.
  std::string decode(const std::vector<int64_t>& ids) const;

 private:
  std::string name_;
  std::vector<std::string> vocab_;
  int64_t pad_ = 0, cls_ = 0, eos_ = 0, unk_ = 0, mask_ = 0;
  bool dna_letters_ = false;
  int64_t char_id_[256];                 // single-character tokens, -1 if none
  std::vector<std::string> multi_;       // multi-character tokens, longest first
};

}  // namespace strand::models
