#include "models/tokenizers.h"

#include <algorithm>
#include <cctype>

#include "kernels/ops.h"

namespace strand::models {

namespace {
void index_vocab(const std::vector<std::string>& vocab, int64_t (&char_id)[256], std::vector<std::string>& multi) {
  std::fill(std::begin(char_id), std::end(char_id), int64_t{-1});
  for (size_t i = 0; i < vocab.size(); ++i) {
    if (vocab[i].size() == 1)
      char_id[static_cast<unsigned char>(vocab[i][0])] = static_cast<int64_t>(i);
    else
      multi.push_back(vocab[i]);
  }
  std::stable_sort(multi.begin(), multi.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
}
std::string printable(char c) {
  if (std::isprint(static_cast<unsigned char>(c))) return std::string("'") + c + "'";
  return "byte " + std::to_string(static_cast<unsigned char>(c));
}
}  // namespace

Tokenizer Tokenizer::esm2() {
  Tokenizer t;
  t.name_ = "ESM-2";
  t.vocab_ = {"<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R",
              "T",     "I",     "D",     "P",     "K", "Q", "N", "F", "Y", "M", "H",
              "W",     "C",     "X",     "B",     "U", "Z", "O", ".", "-", "<null_1>", "<mask>"};
  t.cls_ = 0;
  t.pad_ = 1;
  t.eos_ = 2;
  t.unk_ = 3;
  t.mask_ = 32;
  index_vocab(t.vocab_, t.char_id_, t.multi_);
  return t;
}

Tokenizer Tokenizer::aido_rna(bool dna_letters) {
  Tokenizer t;
  t.name_ = "AIDO.RNA";
  t.vocab_ = {"[PAD]", "[MASK]", "[CLS]", "[SEP]", "[UNK]", "A", "G", "C",
              "T",     "U",      "N",     "[BOS]", "[EOS]", "[UNUSED1]", "[UNUSED2]", "[UNUSED3]"};
  t.pad_ = 0;
  t.mask_ = 1;
  t.cls_ = 2;
  t.eos_ = 3;
  t.unk_ = 4;
  t.dna_letters_ = dna_letters;
  index_vocab(t.vocab_, t.char_id_, t.multi_);
  return t;
}

int64_t Tokenizer::token_id(const std::string& token) const {
  auto it = std::find(vocab_.begin(), vocab_.end(), token);
  STRAND_CHECK(it != vocab_.end(), name_, " tokenizer: '", token, "' is not in the vocabulary");
  return it - vocab_.begin();
}

std::vector<int64_t> Tokenizer::encode(const std::string& raw, const TokenizeOptions& o, int64_t index) const {
  STRAND_CHECK(o.max_length == -1 || o.max_length >= 2, name_, " tokenizer: max_length must be -1 (none) or >= 2 (",
               "it counts the two special tokens), got ", o.max_length);
  std::string seq = raw;
  if (dna_letters_)
    for (char& c : seq) {
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      if (c == 'U') c = 'T';
    }
  std::vector<int64_t> ids{cls_};
  bool in_unknown = false;  // inside a run of unknown characters (one <unk> per run, as HF)
  for (size_t i = 0; i < seq.size();) {
    const char c = seq[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      in_unknown = false;
      ++i;
      continue;
    }
    int64_t id = -1;
    size_t len = 1;
    if (c == '<' || c == '[')
      for (const auto& m : multi_)
        if (seq.compare(i, m.size(), m) == 0) {
          id = token_id(m);
          len = m.size();
          break;
        }
    if (id < 0) id = char_id_[static_cast<unsigned char>(c)];
    if (id < 0) {
      STRAND_CHECK(o.allow_unknown, name_, " tokenizer: sequence ", index, ", position ", i, ": character ",
                   printable(raw[i]), " is not in the ", name_, " alphabet",
                   dna_letters_ ? "" : " (letters are case-sensitive)",
                   "; allow unknown characters (strand-embed --allow-unknown) to map them to ",
                   vocab_[static_cast<size_t>(unk_)]);
      if (!in_unknown) ids.push_back(unk_);
      in_unknown = true;
      ++i;
      continue;
    }
    in_unknown = false;
    ids.push_back(id);
    i += len;
  }
  if (o.max_length >= 2 && static_cast<int64_t>(ids.size()) + 1 > o.max_length) ids.resize(static_cast<size_t>(o.max_length - 1));
  ids.push_back(eos_);
  return ids;
}

Encoding Tokenizer::batch(const std::vector<std::string>& seqs, const TokenizeOptions& o) const {
  STRAND_CHECK(!seqs.empty(), name_, " tokenizer: empty batch");
  std::vector<std::vector<int64_t>> all;
  Encoding e;
  size_t L = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    all.push_back(encode(seqs[i], o, static_cast<int64_t>(i)));
    L = std::max(L, all.back().size());
    e.lengths.push_back(static_cast<int64_t>(all.back().size()));
  }
  const size_t N = seqs.size();
  std::vector<int64_t> ids(N * L, pad_), am(N * L, 0), sm(N * L, 1);
  for (size_t i = 0; i < N; ++i) {
    const auto& s = all[i];
    for (size_t j = 0; j < s.size(); ++j) {
      ids[i * L + j] = s[j];
      am[i * L + j] = 1;
      sm[i * L + j] = (j == 0 || j + 1 == s.size()) ? 1 : 0;
    }
  }
  const Shape shape{static_cast<int64_t>(N), static_cast<int64_t>(L)};
  e.input_ids = ops::from_vector<int64_t>(ids, shape);
  e.attention_mask = ops::from_vector<int64_t>(am, shape);
  e.special_tokens_mask = ops::from_vector<int64_t>(sm, shape);
  return e;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string s;
  for (int64_t id : ids) {
    STRAND_CHECK(id >= 0 && id < vocab_size(), name_, " tokenizer: id ", id, " out of range [0, ", vocab_size(), ")");
    s += vocab_[static_cast<size_t>(id)];
  }
  return s;
}

}  // namespace strand::models
