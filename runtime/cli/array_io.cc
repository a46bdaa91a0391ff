// SPDX-License-Identifier: Apache-2.0
// .npy and .csv reading and writing for the CLI. Every value read is checked (finite, shape,
// size against the header) and every problem names the file; output only ever goes through
// siflow::write_files_atomic, so a failed run never leaves a half-written file.
#include "array_io.hpp"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "errors.hpp"
#include "file_checks.hpp"
#include "siflow/siflow.hpp"

namespace siflow::cli {
namespace {

const unsigned char kNpyMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i)
    s += format(i ? ", %llu" : "%llu", static_cast<unsigned long long>(shape[i]));
  return s + (shape.size() == 1 ? ",)" : ")");
}

std::string shape_text(const Array& a) {
  if (a.npy_shape.size() > 2) return shape_text(a.npy_shape);
  return a.one_dimensional ? shape_text({a.rows}) : shape_text({a.rows, a.cols});
}

// Where value (row, col) of `a` came from: a CSV line and column, or a numpy index.
std::string where(const Array& a, size_t row, size_t col) {
  if (a.format == FileFormat::kCsv) return format("line %zu, column %zu", a.lines[row], col + 1);
  if (a.npy_shape.size() > 2) {
    // The trailing index of flat column `col`, row-major.
    std::string index;
    for (size_t axis = a.npy_shape.size(); axis-- > 1;) {
      index = format(", %llu", static_cast<unsigned long long>(col % a.npy_shape[axis])) + index;
      col /= a.npy_shape[axis];
    }
    return format("element [%zu%s]", row, index.c_str());
  }
  return a.one_dimensional ? format("element [%zu]", row) : format("element [%zu, %zu]", row, col);
}

// The header dictionary of a .npy file, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }
class NpyHeader {
 public:
  NpyHeader(const std::string& path, const std::string& text) : path_(path), text_(text) {
    expect('{');
    bool have_descr = false, have_order = false, have_shape = false;
    while (peek() != '}') {
      const std::string key = string();
      expect(':');
      if ((key == "descr" && have_descr) || (key == "fortran_order" && have_order) ||
          (key == "shape" && have_shape))
        fail(format("key '%s' appears twice", key.c_str()));
      if (key == "descr") {
        descr = string();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran_order = boolean();
        have_order = true;
      } else if (key == "shape") {
        tuple();
        have_shape = true;
      } else {
        fail(format("unexpected key '%s'", key.c_str()));
      }
      if (peek() == ',') ++pos_;
    }
    if (!have_descr || !have_order || !have_shape)
      fail("it needs 'descr', 'fortran_order' and 'shape'");
  }

  std::string descr;
  bool fortran_order = false;
  std::vector<uint64_t> shape;

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw RunError(format("%s: malformed .npy header (%s): %.120s", path_.c_str(), what.c_str(),
                          text_.c_str()));
  }
  char peek() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n')) ++pos_;
    if (pos_ == text_.size()) fail("it ends early");
    return text_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail(format("expected '%c' at offset %zu", c, pos_));
    ++pos_;
  }
  std::string string() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail(format("expected a string at offset %zu", pos_));
    const size_t end = text_.find(quote, ++pos_);
    if (end == std::string::npos) fail("unterminated string");
    std::string s = text_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  bool boolean() {
    peek();
    for (const char* word : {"True", "False"})
      if (text_.compare(pos_, std::strlen(word), word) == 0) {
        pos_ += std::strlen(word);
        return word[0] == 'T';
      }
    fail(format("expected True or False at offset %zu", pos_));
  }
  void tuple() {
    expect('(');
    while (peek() != ')') {
      uint64_t v = 0;
      if (!(peek() >= '0' && peek() <= '9')) fail(format("expected a size at offset %zu", pos_));
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
        const uint64_t digit = static_cast<uint64_t>(text_[pos_++] - '0');
        if (v > (UINT64_MAX - digit) / 10) fail("a size overflows");
        v = v * 10 + digit;
      }
      shape.push_back(v);
      if (peek() == ',') ++pos_;
    }
    ++pos_;
  }

  const std::string& path_;
  const std::string& text_;
  size_t pos_ = 0;
};

uint64_t load_le(const unsigned char* p, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

void store_le(uint64_t v, size_t bytes, std::string* out) {
  for (size_t i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

Array parse_npy(const std::string& path, const std::vector<unsigned char>& b) {
  const char* p = path.c_str();
  if (b.size() < 10 || std::memcmp(b.data(), kNpyMagic, sizeof kNpyMagic) != 0)
    throw RunError(format("%s: not a .npy file (no \\x93NUMPY magic)", p));
  const unsigned major = b[6], minor = b[7];
  if (major != 1 && major != 2)
    throw RunError(format("%s: .npy format version %u.%u is not supported (1.0 and 2.0 are)", p,
                          major, minor));
  const size_t offset = major == 1 ? 10 : 12;
  if (b.size() < offset) throw RunError(format("%s: truncated .npy header", p));
  const size_t header_len = load_le(b.data() + 8, offset - 8);
  if (b.size() - offset < header_len)
    throw RunError(
        format("%s: truncated .npy header (%zu of %zu bytes)", p, b.size() - offset, header_len));
  const std::string text(reinterpret_cast<const char*>(b.data()) + offset, header_len);
  const NpyHeader header(path, text);
  size_t item = 0;
  if (header.descr == "<f4") item = 4;
  if (header.descr == "<f8") item = 8;
  // Integer arrays (class labels: numpy's default int64, or int32) are read as their values.
  const bool integer = header.descr == "<i4" || header.descr == "<i8";
  if (integer) item = header.descr == "<i4" ? 4 : 8;
  if (!item)
    throw RunError(
        format("%s: dtype '%s' is not supported; expected '<f4' (float32) or '<f8' "
               "(float64), little-endian (or '<i4'/'<i8' integers)",
               p, header.descr.c_str()));
  if (header.fortran_order)
    throw RunError(
        format("%s: fortran_order is True; save a C-order array "
               "(numpy.ascontiguousarray)",
               p));
  if (header.shape.empty() || header.shape.size() > 4)
    throw RunError(
        format("%s: a %zu-D array of shape %s; expected 1-D to 4-D ([N], [N, d] or "
               "[N, C, H, W])",
               p, header.shape.size(), shape_text(header.shape).c_str()));
  Array a;
  if (integer) a.integer_dtype = header.descr;
  a.one_dimensional = header.shape.size() == 1;
  a.npy_shape = header.shape;
  a.rows = header.shape[0];
  // The trailing extents' product, refused before it could overflow (the data check below then
  // bounds it by the file's size).
  a.cols = 1;
  for (size_t i = 1; i < header.shape.size(); ++i) {
    if (header.shape[i] != 0 && a.cols > (uint64_t{1} << 40) / header.shape[i])
      throw RunError(format("%s: shape %s is too large", p, shape_text(header.shape).c_str()));
    a.cols *= header.shape[i];
  }
  const size_t available = b.size() - offset - header_len;
  if (a.cols != 0 && a.rows > available / item / a.cols)
    throw RunError(
        format("%s: truncated: shape %s of %s needs %.0f bytes of data, but %zu follow "
               "the header",
               p, shape_text(header.shape).c_str(), header.descr.c_str(),
               static_cast<double>(a.rows) * static_cast<double>(a.cols) * item, available));
  const size_t count = a.rows * a.cols;
  if (available != count * item)
    throw RunError(format("%s: %zu unexpected bytes after the data of shape %s", p,
                          available - count * item, shape_text(header.shape).c_str()));
  a.values.resize(count);
  const unsigned char* data = b.data() + offset + header_len;
  for (size_t i = 0; i < count; ++i) {
    const uint64_t bits = load_le(data + i * item, item);
    if (integer) {
      const int64_t v =
          item == 4 ? static_cast<int64_t>(static_cast<int32_t>(bits)) : static_cast<int64_t>(bits);
      a.values[i] = static_cast<double>(v);
    } else if (item == 4) {
      float f;
      const uint32_t b32 = static_cast<uint32_t>(bits);
      std::memcpy(&f, &b32, sizeof f);
      a.values[i] = f;
    } else {
      std::memcpy(&a.values[i], &bits, sizeof(double));
    }
    if (!std::isfinite(a.values[i]))
      throw RunError(format("%s: %s is %s", p, where(a, i / a.cols, i % a.cols).c_str(),
                            std::isnan(a.values[i]) ? "NaN" : "infinite"));
  }
  return a;
}

std::string trim(const std::string& s) {
  const size_t first = s.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> fields;
  size_t start = 0;
  for (;;) {
    const size_t comma = line.find(',', start);
    fields.push_back(trim(line.substr(start, comma - start)));
    if (comma == std::string::npos) return fields;
    start = comma + 1;
  }
}

std::string columns(size_t n) { return format(n == 1 ? "%zu column" : "%zu columns", n); }

// Parses a whole field as a number (strtod's syntax); false when anything is left over.
bool parse_number(const std::string& field, double* value) {
  if (field.empty()) return false;
  char* stop = nullptr;
  *value = std::strtod(field.c_str(), &stop);
  return stop == field.c_str() + field.size();
}

// A header field: not a number, and it starts like a name (a letter, '_' or a quote).
bool looks_like_name(const std::string& field) {
  double unused;
  if (field.empty() || parse_number(field, &unused)) return false;
  const unsigned char c = static_cast<unsigned char>(field[0]);
  return std::isalpha(c) || c == '_' || c == '"' || c == '\'';
}

Array parse_csv(const std::string& path, const std::vector<unsigned char>& b) {
  const char* p = path.c_str();
  Array a;
  a.format = FileFormat::kCsv;
  std::string text(b.begin(), b.end());
  // A UTF-8 byte-order mark (as spreadsheet programs write) is not part of the first field.
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);
  size_t line_no = 0, header_line = 0, header_cols = 0;
  bool first = true;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (line.find('\0') != std::string::npos)
      throw RunError(format("%s: line %zu holds a NUL byte (not a text file?)", p, line_no));
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    const std::vector<std::string> fields = split_fields(line);
    // Only the first non-empty line can be a header, and only when every field is a name; any
    // other line is data, and a field that does not parse is an error, never a header.
    if (first) {
      first = false;
      bool names = true;
      for (const std::string& f : fields) names = names && looks_like_name(f);
      if (names) {
        header_line = line_no;
        header_cols = fields.size();
        continue;
      }
    }
    std::vector<double> row(fields.size());
    size_t bad = fields.size();  // the first field that is not a number
    for (size_t c = 0; c < fields.size() && bad == fields.size(); ++c)
      if (!parse_number(fields[c], &row[c])) bad = c;
    if (a.rows == 0 && header_line != 0 && fields.size() != header_cols)
      throw RunError(format("%s: line %zu has %s, but the header on line %zu has %zu", p, line_no,
                            columns(fields.size()).c_str(), header_line, header_cols));
    if (a.rows > 0 && fields.size() != a.cols)
      throw RunError(format("%s: line %zu has %s, expected %zu (as on line %zu)", p, line_no,
                            columns(fields.size()).c_str(), a.cols, a.lines.front()));
    if (bad < fields.size())
      throw RunError(fields[bad].empty()
                         ? format("%s: line %zu, column %zu is empty", p, line_no, bad + 1)
                         : format("%s: line %zu, column %zu: '%s' is not a number", p, line_no,
                                  bad + 1, fields[bad].c_str()));
    for (size_t c = 0; c < fields.size(); ++c)
      if (!std::isfinite(row[c]))
        throw RunError(format("%s: line %zu, column %zu: '%s' is not a finite number", p, line_no,
                              c + 1, fields[c].c_str()));
    a.cols = fields.size();
    a.values.insert(a.values.end(), row.begin(), row.end());
    a.lines.push_back(line_no);
    ++a.rows;
  }
  return a;
}

// Appends `v` printed with %.9g (enough digits to round-trip a float32), comma-separated.
void append_value(double v, bool comma, std::string* out) {
  char buffer[32];
  const int n = std::snprintf(buffer, sizeof buffer, comma ? ",%.9g" : "%.9g", v);
  out->append(buffer, static_cast<size_t>(n));
}

std::string npy_bytes(const char* descr, const std::string& shape, const std::string& data) {
  std::string dict =
      format("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape.c_str());
  // Magic, version, length, dict and newline together are a multiple of 64 bytes.
  dict.append((64 - (10 + dict.size() + 1) % 64) % 64, ' ');
  dict += '\n';
  std::string out(reinterpret_cast<const char*>(kNpyMagic), sizeof kNpyMagic);
  out += '\x01';
  out += '\x00';
  store_le(dict.size(), 2, &out);
  return out + dict + data;
}

}  // namespace

bool known_format(const std::string& path, FileFormat* format) {
  const size_t dot = path.rfind('.');
  const size_t slash = path.rfind('/');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return false;
  std::string ext = path.substr(dot);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext != ".npy" && ext != ".csv") return false;
  *format = ext == ".npy" ? FileFormat::kNpy : FileFormat::kCsv;
  return true;
}

FileFormat format_of(const char* option, const std::string& path) {
  FileFormat format = FileFormat::kNpy;
  if (!known_format(path, &format))
    throw UsageError(siflow::cli::format("%s: '%s' has neither a .npy nor a .csv extension", option,
                                         path.c_str()));
  return format;
}

void check_writable(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  if (access(dir.c_str(), W_OK) != 0)
    throw RunError(format("cannot write '%s': directory '%s': %s", path.c_str(), dir.c_str(),
                          std::strerror(errno)));
}

Array parse_array(FileFormat format, const std::string& name,
                  const std::vector<unsigned char>& bytes) {
  return format == FileFormat::kNpy ? parse_npy(name, bytes) : parse_csv(name, bytes);
}

Array read_array(const char* option, const std::string& path) {
  const FileFormat kind = format_of(option, path);
  return parse_array(kind, path, read_regular_file(path, kMaxInputBytes));
}

namespace {

// Integer arrays are class labels (read_labels); points, times and grids are floats.
void refuse_integers(const Array& a, const char* p) {
  if (!a.integer_dtype.empty())
    throw RunError(
        format("%s: dtype '%s' is not supported; expected '<f4' (float32) or '<f8' "
               "(float64), little-endian",
               p, a.integer_dtype.c_str()));
}

}  // namespace

std::vector<float> read_points(const char* option, const std::string& path, uint32_t dim,
                               const std::vector<uint32_t>& sample_shape) {
  const Array a = read_array(option, path);
  const char* p = path.c_str();
  refuse_integers(a, p);
  if (a.rows == 0)
    throw RunError(a.format == FileFormat::kNpy
                       ? format("%s: empty array of shape %s; expected at least one row", p,
                                shape_text(a).c_str())
                       : format("%s: no data rows", p));
  bool fits = a.one_dimensional ? dim == 1 : a.npy_shape.size() <= 2 && a.cols == dim;
  std::string expected = format("[N, %u]", dim);
  if (sample_shape.size() > 1) {
    // The model's own sample shape, [N, C, H, W] say, is accepted as well as the flat [N, d].
    bool same = a.npy_shape.size() == sample_shape.size() + 1;
    for (size_t i = 0; same && i < sample_shape.size(); ++i)
      same = a.npy_shape[i + 1] == sample_shape[i];
    fits = fits || same;
    expected += " or [N";
    for (uint32_t e : sample_shape) expected += format(", %u", e);
    expected += "]";
  }
  if (!fits)
    throw RunError(format("%s: shape %s does not match the model: expected %s (dim %u)", p,
                          shape_text(a).c_str(), expected.c_str(), dim));
  std::vector<float> x(a.values.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::fabs(a.values[i]) > FLT_MAX)
      throw RunError(format("%s: %s = %g does not fit in float32", p,
                            where(a, i / a.cols, i % a.cols).c_str(), a.values[i]));
    x[i] = static_cast<float>(a.values[i]);
  }
  return x;
}

namespace {

std::vector<double> vector_of(Array a, const char* p) {
  if (a.rows == 0) throw RunError(format("%s: no values", p));
  if (a.cols != 1 || a.npy_shape.size() > 2)
    throw RunError(
        format("%s: shape %s; expected a vector [N] or [N, 1]", p, shape_text(a).c_str()));
  return std::move(a.values);
}

}  // namespace

std::vector<double> read_vector(const char* option, const std::string& path) {
  Array a = read_array(option, path);
  refuse_integers(a, path.c_str());
  return vector_of(std::move(a), path.c_str());
}

std::vector<double> read_labels(const char* option, const std::string& path) {
  return vector_of(read_array(option, path), path.c_str());
}

std::string encode_points(const std::string& path, const float* x, size_t rows, uint32_t dim,
                          const std::vector<uint32_t>& sample_shape) {
  const size_t count = rows * dim;
  std::string data;
  if (format_of("output", path) == FileFormat::kNpy) {
    data.reserve(count * 4);
    for (size_t i = 0; i < count; ++i) {
      uint32_t bits;
      std::memcpy(&bits, &x[i], sizeof bits);
      store_le(bits, 4, &data);
    }
    std::vector<uint64_t> shape{rows, dim};
    if (sample_shape.size() > 1) {
      shape.resize(1);
      shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
    }
    return npy_bytes("<f4", shape_text(shape), data);
  }
  for (uint32_t k = 0; k < dim; ++k) data += format(k ? ",x%u" : "x%u", k);
  data += '\n';
  for (size_t r = 0; r < rows; ++r) {
    for (uint32_t k = 0; k < dim; ++k) append_value(x[r * dim + k], k > 0, &data);
    data += '\n';
  }
  return data;
}

std::string encode_log_probs(const std::string& path, const double* logp, size_t n) {
  std::string data;
  if (format_of("output", path) == FileFormat::kNpy) {
    data.reserve(n * 8);
    for (size_t i = 0; i < n; ++i) {
      uint64_t bits;
      std::memcpy(&bits, &logp[i], sizeof bits);
      store_le(bits, 8, &data);
    }
    return npy_bytes("<f8", shape_text({n}), data);
  }
  data = "logp\n";
  for (size_t i = 0; i < n; ++i) {
    append_value(logp[i], false, &data);
    data += '\n';
  }
  return data;
}

void write_outputs(const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<FileOutput> out;
  for (const auto& f : files) out.push_back({f.first.c_str(), f.second.data(), f.second.size()});
  check(write_files_atomic(out.data(), out.size()));
}

void write_points(const std::string& path, const float* x, size_t rows, uint32_t dim,
                  const std::vector<uint32_t>& sample_shape) {
  write_outputs({{path, encode_points(path, x, rows, dim, sample_shape)}});
}

}  // namespace siflow::cli
