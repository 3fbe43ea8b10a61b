// The REST API's request bodies must be valid JSON in full, whichever parts of them it reads:
// requests through RestApi::handle to a real ONNX model (affine_v1: x FP32 [N, 4] -> y), run
// on the model's worker and inline on the calling thread (RestOptions::max_inline_runs); and
// the same bodies as routed messages (score_json_request, module mode).
#include <future>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "generated_models.hpp"
#include "infer/model_manager.hpp"
#include "infer/rest_api.hpp"

namespace cairn::infer {
namespace {

// affine_v1 loaded into models_.
class AffineModel : public testing::GeneratedModels {
 protected:
  void SetUp() override {
    ModelSpec spec;
    spec.name = "affine";
    spec.version = "1";
    spec.path = model("affine_v1.onnx");
    ASSERT_TRUE(models_.load(spec, false));
  }

  ModelManager models_;
};

// The parameter: whether requests may run inline on the thread that calls handle().
class RestJsonTest : public AffineModel, public ::testing::WithParamInterface<bool> {
 protected:
  net::HttpResponse post(const std::string& target, const std::string& body,
                         net::HttpHeaders headers = {}) {
    net::HttpRequest request;
    request.method = "POST";
    request.target = target;
    request.body = body;
    request.headers = std::move(headers);
    std::promise<net::HttpResponse> answered;
    api_.handle(request, [&](net::HttpResponse r) { answered.set_value(std::move(r)); });
    auto response = answered.get_future().get();
    // An inline run decodes the request's own body and leaves it as it was; a queued request
    // takes it (a move: the body is not copied).
    if (GetParam()) {
      EXPECT_EQ(request.body, body);
    } else {
      EXPECT_TRUE(request.body.empty() || request.body == body);
    }
    return response;
  }
  net::HttpResponse infer(const std::string& body) { return post("/v2/models/affine/infer", body); }
  net::HttpResponse score(const std::string& body) { return post("/score/affine", body); }

  // Engine runs so far: a refused request must not have run the model.
  std::string runs() const {
    const std::string text = models_.prometheus_text();
    const std::string key = "cairn_infer_engine_runs_total{model=\"affine\"} ";
    const auto at = text.find(key);
    if (at == std::string::npos) return "?";
    const auto start = at + key.size();
    return text.substr(start, text.find('\n', start) - start);
  }

  // Refused with 400, an error saying where the body is malformed, and the model not run.
  void expect_malformed(const net::HttpResponse& r, const std::string& runs_before) {
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NE(r.body.find("not valid JSON"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find(" at byte "), std::string::npos) << r.body;
    EXPECT_EQ(runs(), runs_before);
  }

  static RestOptions options() {
    RestOptions o;
    o.max_inline_runs = GetParam() ? 1 : 0;
    return o;
  }

  RestApi api_{models_, options()};
};

INSTANTIATE_TEST_SUITE_P(Threads, RestJsonTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "Inline" : "Worker";
                         });

TEST_P(RestJsonTest, RequestsRunWhereTheOptionsSay) {
  ASSERT_EQ(score(R"({"x":[[1,2,3,4]]})").status, 200);
  const std::string text = models_.prometheus_text();
  const std::string inline_count =
      std::string("cairn_infer_inline_requests_total{model=\"affine\"} ") +
      (GetParam() ? "1" : "0");
  EXPECT_NE(text.find(inline_count), std::string::npos) << text;
}

const std::string kInput = R"({"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]})";

TEST_P(RestJsonTest, ValidBodiesAreServed) {
  auto r = infer(R"({"inputs":[)" + kInput +
                 R"(],"outputs":[{"name":"y","data":[1,"a",{"b":[null]}]}]})");
  EXPECT_EQ(r.status, 200) << r.body;
  r = score(R"({"x":[[1,2,3,4]]})");
  EXPECT_EQ(r.status, 200) << r.body;
  r = score(R"({"data":[[1,2,3,4]],"extra":[1e308,-0.0,"\u00e9\ud83d\ude00",[[]]]})");
  EXPECT_EQ(r.status, 200) << r.body;
}

// Defect: arrays the server does not read were only scanned for their end.
TEST_P(RestJsonTest, ArraysTheServerDoesNotReadMustBeJson) {
  const auto before = runs();
  // An output's "data".
  expect_malformed(
      infer(R"({"inputs":[)" + kInput + R"(],"outputs":[{"name":"y","data":[1,,2]}]})"), before);
  // A repeated "data": the first one is replaced, never read.
  expect_malformed(
      infer(R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,x],)"
            R"("data":[1,2,3,4]}]})"),
      before);
  // /score: a repeated key, and a member next to "data".
  expect_malformed(score(R"({"x":[[1,2,3,]],"x":[[1,2,3,4]]})"), before);
  expect_malformed(score(R"({"data":[[1,2,3,4]],"extra":[01]})"), before);
}

TEST_P(RestJsonTest, BinaryInputsDataMustBeJsonToo) {
  const auto before = runs();
  const std::string header = R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],)"
                             R"("parameters":{"binary_data_size":16},"data":[tru]}]})";
  const auto r = post("/v2/models/affine/infer", header + std::string(16, '\0'),
                      {{"Inference-Header-Content-Length", std::to_string(header.size())}});
  expect_malformed(r, before);
}

// Defect: the end of an unread array was found without matching bracket kinds.
TEST_P(RestJsonTest, BracketKindsMustMatch) {
  const auto before = runs();
  expect_malformed(
      infer(R"({"inputs":[)" + kInput + R"(],"outputs":[{"name":"y","data":[{"a":1]]}]})"), before);
  expect_malformed(score(R"({"data":[[1,2,3,4]],"extra":[[1}]})"), before);
}

TEST_P(RestJsonTest, StringsNumbersAndLiteralsFollowJson) {
  const auto before = runs();
  for (const std::string extra : {
           "[\"\x01\"]",          // a control character
           R"(["\q"])",           // an unknown escape
           R"(["\ud800"])",       // a lone surrogate
           R"(["\u12"])",         // a short \u escape
           "[\"\xff\"]",          // not UTF-8
           "[\"\xc0\xaf\"]",      // an overlong form
           "[\"\xed\xa0\x80\"]",  // a surrogate in UTF-8
           "[-]",
           "[1.]",
           "[.5]",
           "[1e]",
           "[+1]",
           "[01]",
           "[-01]",
           "[0x10]",
           "[NaN]",
           "[Infinity]",
           "[-Infinity]",
           "[1e999]",
           "[-1e309]",
           "[nul]",
           "[True]",
           "[1 2]",
           "[1,]",
           "[,1]",
           "[\"a\":1]",
       }) {
    SCOPED_TRACE(extra);
    expect_malformed(score(R"({"data":[[1,2,3,4]],"extra":)" + extra + "}"), before);
  }
}

TEST_P(RestJsonTest, TrailingTextAndDepthAreRefused) {
  const auto before = runs();
  expect_malformed(score(R"({"x":[[1,2,3,4]]} x)"), before);
  expect_malformed(score(R"({"x":[[1,2,3,4]]}{})"), before);
  const std::string deep = std::string(100, '[') + std::string(100, ']');
  auto r = score(R"({"data":[[1,2,3,4]],"extra":)" + deep + "}");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("nested deeper than 64 levels"), std::string::npos) << r.body;
  EXPECT_EQ(runs(), before);
}

TEST_P(RestJsonTest, ErrorsSayWhere) {
  const std::string body = "{\"x\":\n  [[1,2,3,4]],\n  \"y\": [1,}";
  const auto r = score(body);
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("expected a value, found '}' at byte 31 (line 3, column 11)"),
            std::string::npos)
      << r.body;
}

// Module mode: routed scoring messages go through the same envelope parser, as strictly.
class MessageJsonTest : public AffineModel {
 protected:
  ScoreAnswer message(const std::string& body) {
    std::promise<ScoreAnswer> answered;
    score_json_request(models_, body, "affine", "", 64,
                       [&](ScoreAnswer a) { answered.set_value(std::move(a)); });
    return answered.get_future().get();
  }

  void expect_malformed(const ScoreAnswer& a) {
    EXPECT_EQ(a.status, 400) << a.body;
    EXPECT_NE(a.body.find("not valid JSON"), std::string::npos) << a.body;
    EXPECT_NE(a.body.find(" at byte "), std::string::npos) << a.body;
  }
};

TEST_F(MessageJsonTest, V2AndScoreBodiesAreAnswered) {
  auto a = message(R"({"id":"m1","inputs":[)" + kInput + R"(],"outputs":[{"name":"y"}]})");
  EXPECT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.model, "affine");
  auto j = nlohmann::json::parse(a.body);
  EXPECT_EQ(j["id"], "m1");
  EXPECT_EQ(j["outputs"][0]["name"], "y");
  // Binary outputs cannot travel in a message: JSON even when asked for.
  a = message(R"({"inputs":[)" + kInput + R"(],"parameters":{"binary_data_output":true}})");
  EXPECT_EQ(a.status, 200) << a.body;
  EXPECT_TRUE(nlohmann::json::parse(a.body)["outputs"][0].contains("data")) << a.body;
  a = message(R"({"x":[[1,2,3,4]]})");
  EXPECT_EQ(a.status, 200) << a.body;
  const auto y = nlohmann::json::parse(a.body)["y"];
  a = message(R"({"data":[[1,2,3,4]],"extra":[1e308,"\u00e9"]})");
  EXPECT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(nlohmann::json::parse(a.body)["y"], y);
}

TEST_F(MessageJsonTest, MalformedBodiesAreRefusedSayingWhere) {
  // Inside a v2 tensor, an output's unread "data", a /score tensor, an unread member.
  expect_malformed(
      message(R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,,4]}]})"));
  expect_malformed(
      message(R"({"inputs":[)" + kInput + R"(],"outputs":[{"name":"y","data":[1,,2]}]})"));
  expect_malformed(message(R"({"x":[[1,2,3,]]})"));
  expect_malformed(message(R"({"data":[[1,2,3,4]],"extra":[01]})"));
  expect_malformed(message(R"({"data":[[1,2,3,4]],"extra":[[1}]})"));
  // After the value: text, a second value, a NUL byte.
  expect_malformed(message(R"({"x":[[1,2,3,4]]} x)"));
  expect_malformed(message(R"({"x":[[1,2,3,4]]}{})"));
  expect_malformed(message(std::string(R"({"x":[[1,2,3,4]]})") + '\0' + "junk"));
  const auto a = message("{\"x\":\n  [[1,2,3,4]],\n  \"y\": [1,}");
  EXPECT_NE(a.body.find("expected a value, found '}' at byte 31 (line 3, column 11)"),
            std::string::npos)
      << a.body;
  const std::string deep = std::string(100, '[') + std::string(100, ']');
  const auto d = message(R"({"data":[[1,2,3,4]],"extra":)" + deep + "}");
  EXPECT_EQ(d.status, 400);
  EXPECT_NE(d.body.find("nested deeper than 64 levels"), std::string::npos) << d.body;
}

}  // namespace
}  // namespace cairn::infer
