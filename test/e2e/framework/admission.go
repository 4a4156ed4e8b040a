package framework

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// referenceUID is the request uid of the reference review, testenv.ReviewFile.
const referenceUID = `"uid":"0f9b0e3a-6a1c-4a53-9e8b-1d2f3c4b5a69"`

// NewReview returns the reference AdmissionReview with a request uid of its
// own derived from i, as the API server gives every request its own.
func NewReview(body []byte, i int64) []byte {
	return bytes.Replace(body, []byte(referenceUID), []byte(fmt.Sprintf(`"uid":"0f9b0e3a-6a1c-4a53-9e8b-%012d"`, i)), 1)
}

// PostReview sends one AdmissionReview to url and checks that the answer
// allows the pod with a patch (the pod was injected).
func PostReview(c *http.Client, url string, body []byte) error {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, b)
	}
	var review struct {
		Response struct {
			Allowed bool   `json:"allowed"`
			Patch   []byte `json:"patch"`
		} `json:"response"`
	}
	if err := json.Unmarshal(b, &review); err != nil {
		return err
	}
	if !review.Response.Allowed || len(review.Response.Patch) == 0 {
		return fmt.Errorf("not an injected answer: %.200s", b)
	}
	return nil
}
