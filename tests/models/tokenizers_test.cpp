// Tokenizers: exact ids, specials, truncation counting the specials, padding and masks, unknown
// characters (error by position, or one <unk> per run as HF), AIDO.RNA's DNA-letter switch.
#include "models/tokenizers.h"
#include "tests/test_util.h"

namespace strand::models {
namespace {

using test::throws_with;
using V = std::vector<int64_t>;

TEST(Tokenizer, Esm2AlphabetAndSpecials) {
  Tokenizer t = Tokenizer::esm2();
  EXPECT_EQ(t.vocab_size(), 33);
  EXPECT_EQ(t.cls_id(), 0);
  EXPECT_EQ(t.pad_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.unk_id(), 3);
  EXPECT_EQ(t.mask_id(), 32);
  EXPECT_EQ(t.token_id("L"), 4);
  EXPECT_EQ(t.token_id("-"), 30);
  EXPECT_EQ(t.token_id("<null_1>"), 31);
  EXPECT_EQ(t.encode("MKL"), (V{0, 20, 15, 4, 2}));
  EXPECT_EQ(t.encode("AC<mask>D"), (V{0, 5, 23, 32, 13, 2}));
  EXPECT_EQ(t.encode(""), (V{0, 2}));
  EXPECT_EQ(t.encode("A C\tD\n"), (V{0, 5, 23, 13, 2}));  // whitespace is not a token
  EXPECT_EQ(t.decode(t.encode("AC<mask>D")), "<cls>AC<mask>D<eos>");
  EXPECT_TRUE(throws_with([&] { t.token_id("J"); }, {"'J'", "not in the vocabulary"}));
}

TEST(Tokenizer, UnknownCharactersErrorByPositionOrBecomeOneUnkPerRun) {
  Tokenizer t = Tokenizer::esm2();
  EXPECT_TRUE(throws_with([&] { t.encode("MKjL", {}, 7); }, {"sequence 7", "position 2", "'j'", "ESM-2"}));
  TokenizeOptions o;
  o.allow_unknown = true;
  EXPECT_EQ(t.encode("MKjL", o), (V{0, 20, 15, 3, 4, 2}));
  EXPECT_EQ(t.encode("MKjjjL", o), (V{0, 20, 15, 3, 4, 2}));      // a run is one <unk>, as HF
  EXPECT_EQ(t.encode("MKjj jL", o), (V{0, 20, 15, 3, 3, 4, 2}));  // whitespace ends a run
  EXPECT_EQ(t.encode("<foo>", o), (V{0, 3, 2}));
}

TEST(Tokenizer, TruncationCountsTheSpecialsAndKeepsTheStart) {
  Tokenizer t = Tokenizer::esm2();
  TokenizeOptions o;
  o.max_length = 5;
  EXPECT_EQ(t.encode("LAGVSE", o), (V{0, 4, 5, 6, 2}));
  EXPECT_EQ(t.encode("LAG", o), (V{0, 4, 5, 6, 2}));
  o.max_length = 2;
  EXPECT_EQ(t.encode("LAG", o), (V{0, 2}));
  o.max_length = 1;
  EXPECT_TRUE(throws_with([&] { t.encode("L", o); }, {"max_length", "got 1"}));
}

TEST(Tokenizer, BatchPadsRightWithMasks) {
  Tokenizer t = Tokenizer::esm2();
  Encoding e = t.batch({"LA", "LAGVS", ""});
  EXPECT_EQ(e.input_ids.sizes(), (Shape{3, 7}));
  EXPECT_EQ(e.input_ids.dtype(), DType::i64);
  EXPECT_EQ(ops::to_vector<int64_t>(e.input_ids),
            (V{0, 4, 5, 2, 1, 1, 1, 0, 4, 5, 6, 7, 8, 2, 0, 2, 1, 1, 1, 1, 1}));
  EXPECT_EQ(ops::to_vector<int64_t>(e.attention_mask),
            (V{1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}));
  EXPECT_EQ(ops::to_vector<int64_t>(e.special_tokens_mask),
            (V{1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(e.lengths, (V{4, 7, 2}));
  EXPECT_TRUE(throws_with([&] { t.batch({}); }, {"empty batch"}));
}

TEST(Tokenizer, AidoRnaV2LayoutAndDnaLetters) {
  Tokenizer t = Tokenizer::aido_rna();
  EXPECT_EQ(t.vocab_size(), 16);
  EXPECT_EQ(t.pad_id(), 0);
  EXPECT_EQ(t.mask_id(), 1);
  EXPECT_EQ(t.cls_id(), 2);
  EXPECT_EQ(t.eos_id(), 3);
  EXPECT_EQ(t.unk_id(), 4);
  EXPECT_TRUE(t.dna_letters());
  EXPECT_EQ(t.encode("ACGT"), (V{2, 5, 7, 6, 8, 3}));
  EXPECT_EQ(t.encode("acgu"), (V{2, 5, 7, 6, 8, 3}));  // upper-cased, U -> T (DNA letters)
  EXPECT_EQ(t.encode("AC[MASK]N"), (V{2, 5, 7, 1, 10, 3}));
  EXPECT_TRUE(throws_with([&] { t.encode("ACXG", {}, 3); }, {"AIDO.RNA", "sequence 3", "position 2", "'X'", "[UNK]"}));
  // ModelGenerator's exact input: nothing converted, U is its own token, lowercase is unknown.
  Tokenizer mg = Tokenizer::aido_rna(false);
  EXPECT_EQ(mg.encode("ACGU"), (V{2, 5, 7, 6, 9, 3}));
  EXPECT_TRUE(throws_with([&] { mg.encode("ACgu"); }, {"position 2", "'g'", "case-sensitive"}));
  TokenizeOptions o;
  o.allow_unknown = true;
  EXPECT_EQ(mg.encode("ACgu", o), (V{2, 5, 7, 4, 3}));
  o.max_length = 4;
  Encoding e = t.batch({"ACGTACGT", "A"}, o);
  EXPECT_EQ(ops::to_vector<int64_t>(e.input_ids), (V{2, 5, 7, 3, 2, 5, 3, 0}));
  EXPECT_EQ(ops::to_vector<int64_t>(e.attention_mask), (V{1, 1, 1, 1, 1, 1, 1, 0}));
}

}  // namespace
}  // namespace strand::models
